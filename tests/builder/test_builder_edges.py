"""Edges of a run: the hidden deprovision step, provider failures outside steps, cleanup, late timeouts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar, Literal

import anyio
import pytest
from pydantic import BaseModel

from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.context import StepContext
from aib_sdk.errors import StepError
from aib_sdk.events import StepFinished, TargetStatus, WarningEvent
from aib_sdk.models.specs import AibModel
from aib_sdk.options import BuildOptions
from aib_sdk.plugins import hookimpl
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import (
    FakeBuildHost,
    FakeMachine,
    FakePlugin,
    FakeTargetSpec,
    fake_plugin,
    fake_template,
)
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio


class DeprovisionSpec(AibModel):
    type: Literal["Deprovision"]


class LinuxDeprovision:
    type_name: ClassVar[str] = "Deprovision"
    spec_model: ClassVar[type[BaseModel]] = DeprovisionSpec
    validator_model: ClassVar[type[BaseModel] | None] = None
    os_types: ClassVar[tuple[str, ...]] = ("Linux",)
    hidden: ClassVar[bool] = True

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        result = await step.communicator.run("sudo sh /tmp/DeprovisionScript.sh", on_output=step.on_output)
        if not result.ok:
            raise StepError(step.name, "deprovisioning failed", exit_code=result.exit_code, log_tail=step.tail)


class DeprovisionPlugin:
    @hookimpl
    def aib_register_customizers(self) -> list[type]:
        return [LinuxDeprovision]


def _builder(aib_home: Config, fakes: FakePlugin, template: dict, recorder: EventRecorder, **options) -> Builder:
    # No built-ins: the core's own Deprovision step (once there is one) must not clash with the test's.
    plugins = PluginManager(entry_points=False, builtins=False, plugins=[fakes, DeprovisionPlugin()])
    opts = BuildOptions(config=aib_home, plugins=plugins, build_host="fake", on_event=recorder, **options)
    return Builder(template, options=opts)


async def test_deprovision_runs_last_on_the_build_vm(aib_home: Config):
    fakes, recorder = fake_plugin(), EventRecorder()
    result = await _builder(aib_home, fakes, fake_template(steps=1, validations=1, name="d"), recorder).run()
    assert result.run_state == "Succeeded"
    build_vm, validation_vm = fakes.world.machines
    assert build_vm.fake_communicator.commands == ["echo step 0", "sudo sh /tmp/DeprovisionScript.sh"]
    assert validation_vm.fake_communicator.commands == ["echo check 0"]
    finished = recorder.of_kind(StepFinished)
    assert [(s.phase, s.name) for s in finished] == [
        ("customize", "step-0"),
        ("deprovision", "Deprovision"),
        ("validate", "check-0"),
    ]
    assert not any("Deprovision" in w.message for w in recorder.of_kind(WarningEvent))


async def test_deprovision_for_another_os_is_skipped_with_a_warning(aib_home: Config):
    fakes, recorder = fake_plugin(), EventRecorder()
    template = fake_template(steps=1, name="w")
    template["properties"]["source"]["osType"] = "Windows"
    result = await _builder(aib_home, fakes, template, recorder).run()
    assert result.run_state == "Succeeded"
    assert "sudo sh /tmp/DeprovisionScript.sh" not in fakes.world.commands
    assert any("no Deprovision step is installed for Windows" in w.message for w in recorder.of_kind(WarningEvent))


class WindowsDeprovisionSpec(AibModel):
    type: Literal["DeprovisionWindows"]


class WindowsDeprovision:
    type_name: ClassVar[str] = "DeprovisionWindows"
    spec_model: ClassVar[type[BaseModel]] = WindowsDeprovisionSpec
    validator_model: ClassVar[type[BaseModel] | None] = None
    os_types: ClassVar[tuple[str, ...]] = ("Windows",)
    hidden: ClassVar[bool] = True

    async def run(self, spec: BaseModel, step: StepContext) -> None:
        await step.communicator.run("Sysprep.exe /oobe /generalize /quiet /quit", on_output=step.on_output)


class WindowsDeprovisionPlugin:
    @hookimpl
    def aib_register_customizers(self) -> list[type]:
        return [WindowsDeprovision]


async def test_each_os_gets_its_own_deprovision_step(aib_home: Config):
    for os_type, expected in (
        ("Windows", "Sysprep.exe /oobe /generalize /quiet /quit"),
        ("Linux", "sudo sh /tmp/DeprovisionScript.sh"),
    ):
        fakes, recorder = fake_plugin(), EventRecorder()
        plugins = PluginManager(
            entry_points=False, builtins=False, plugins=[fakes, DeprovisionPlugin(), WindowsDeprovisionPlugin()]
        )
        template = fake_template(steps=1, name="os")
        template["properties"]["source"]["osType"] = os_type
        options = BuildOptions(config=aib_home, plugins=plugins, build_host="fake", on_event=recorder)
        result = await Builder(template, options=options).run()
        assert result.run_state == "Succeeded"
        assert fakes.world.commands == ["echo step 0", expected]
        assert recorder.of_kind(StepFinished)[-1].phase == "deprovision"


async def test_failing_deprovision_fails_the_run(aib_home: Config):
    fakes, recorder = fake_plugin(), EventRecorder()
    fakes.world.fail_command("Deprovision", exit_code=127, output="waagent: not found")
    result = await _builder(aib_home, fakes, fake_template(steps=1, targets=1, name="f"), recorder).run()
    assert result.run_state == "Failed"
    message = result.last_run_status.message
    assert "'Deprovision'" in message and "exit code 127" in message and "waagent: not found" in message
    assert fakes.world.machine.captured is None and fakes.world.machine.destroyed
    assert fakes.world.publishes == []


async def test_source_failure_fails_in_building(run_build, aib_fakes: FakePlugin):
    template = fake_template(steps=1, name="s")
    template["properties"]["source"]["fail"] = "image not found in the catalogue"
    result, builder = await run_build(template)
    assert result.run_state == "Failed"
    assert result.last_run_status.run_sub_state == "Building"
    assert "image not found in the catalogue" in result.last_run_status.message
    assert aib_fakes.world.machines == []
    assert json.loads(builder.staging.record_file.read_text())["lastRunStatus"]["runState"] == "Failed"


async def test_boot_failure_fails_in_building(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.boot_error = "qemu exited: could not open disk"
    result, _ = await run_build(fake_template(steps=1, name="b"))
    assert result.run_state == "Failed"
    assert "starting the build VM" in result.last_run_status.message
    assert "could not open disk" in result.last_run_status.message


class BrokenCleanupHost(FakeBuildHost):
    """A test server host whose VM teardown fails: the run's outcome must not change, a warning must say so."""

    name: ClassVar[str] = "broken-cleanup"

    @asynccontextmanager
    async def _run(self, image, vm, ctx) -> AsyncIterator[FakeMachine]:
        machine = FakeMachine(self.world, image, vm)
        self.world.machines.append(machine)
        yield machine
        raise RuntimeError("could not delete the VM")


async def test_cleanup_failure_is_a_warning(make_builder, aib_fakes: FakePlugin, aib_register, aib_events):
    host = type("Host", (BrokenCleanupHost,), {"world": aib_fakes.world})

    class Plugin:
        @hookimpl
        def aib_register_build_hosts(self) -> list[type]:
            return [host]

    aib_register(Plugin())
    builder = make_builder(fake_template(steps=1, name="c"), build_host="broken-cleanup")
    result = await builder.run()
    assert result.run_state == "Succeeded"
    assert any("could not delete the VM" in w.message for w in aib_events.of_kind(WarningEvent))


async def test_timeout_while_publishing_cancels_unfinished_targets(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.slow_target("slow", 30)
    template = fake_template(steps=0, targets=0, name="t")
    template["properties"]["distribute"] = [
        {"type": "FakeTarget", "runOutputName": "fast"},
        {"type": "FakeTarget", "runOutputName": "slow"},
    ]
    with anyio.fail_after(10):
        result, _ = await run_build(template, timeout=0.5)
    assert result.run_state == "Failed"
    assert "timed out" in result.last_run_status.message and "Distributing" in result.last_run_status.message
    assert result.run_outputs["fast"].provisioning_state == "Succeeded"
    assert result.run_outputs["slow"].provisioning_state == "Canceled"


async def test_cancel_before_run_ends_canceled(make_builder, aib_fakes: FakePlugin):
    builder = make_builder(fake_template(steps=1, name="early"))
    await builder.cancel()
    result = await builder.run()
    assert result.run_state == "Canceled"
    assert aib_fakes.world.machines == []


async def test_on_event_errors_do_not_break_the_build(aib_plugins, aib_home: Config):
    calls = []

    def bad_callback(event) -> None:
        calls.append(event.kind)
        raise ValueError("consumer bug")

    options = BuildOptions(config=aib_home, plugins=aib_plugins, build_host="fake", on_event=bad_callback)
    result = await Builder(fake_template(steps=2, name="cb"), options=options).run()
    assert result.run_state == "Succeeded"
    assert calls[0] == "run-started" and calls[-1] == "run-finished"


async def test_a_failed_preflight_fails_before_booting(aib_home: Config):
    class Refusing:
        type_name: ClassVar[str] = "FakeTarget"
        spec_model: ClassVar[type[BaseModel]] = FakeTargetSpec

        @classmethod
        def claims(cls, spec: BaseModel, config: Config) -> bool:
            return getattr(spec, "run_output_name", "") == "target-1"

        async def preflight(self, spec: BaseModel, image: object, ctx: object) -> None:
            raise StepError("x", "should not be a step error")  # any exception: the target is refused

        async def publish(self, artifact: object, spec: BaseModel, ctx: object) -> None:
            raise AssertionError("publish must not be called")

    class RefusingPlugin:
        @hookimpl
        def aib_register_distributors(self) -> list[type]:
            return [Refusing]

    fakes = fake_plugin()
    plugins = PluginManager(entry_points=False, plugins=[fakes, RefusingPlugin()])
    recorder = EventRecorder()
    options = BuildOptions(config=aib_home, plugins=plugins, build_host="fake", on_event=recorder)
    result = await Builder(fake_template(steps=1, targets=2, name="pre"), options=options).run()
    assert result.run_state == "Failed"
    assert "nothing was built" in result.last_run_status.message
    assert result.run_outputs["target-1"].provisioning_state == "Failed"
    assert fakes.world.machines == []  # no VM was started
    assert [s.state for s in recorder.of_kind(TargetStatus)] == ["Failed"]
