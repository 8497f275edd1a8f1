"""Every run-state transition of the Builder, on the test fakes (FakeImage, build host ``fake``, FakeTarget)."""

from __future__ import annotations

import json

import anyio
import pytest

from aib_sdk.builder import Builder, MissingParamsError
from aib_sdk.events import PhaseChanged, RunFinished, StepFinished, StepStarted, WarningEvent
from aib_sdk.testing.fakes import FakePlugin, fake_template
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio


def failing_step_template(**props: object) -> dict[str, object]:
    template = fake_template(steps=0, targets=2, name="failing", **props)
    template["properties"]["customize"] = [  # type: ignore[index]
        {"type": "FakeStep", "name": "hello", "commands": ["echo hello"]},
        {"type": "FakeStep", "name": "install", "commands": ["echo installing", "apt-get install -y nope"]},
        {"type": "FakeStep", "name": "never", "commands": ["echo never"]},
    ]
    return template


async def test_success_walks_every_phase_and_publishes(run_build, aib_fakes: FakePlugin, aib_events: EventRecorder):
    result, builder = await run_build(fake_template(steps=2, targets=2, validations=1, name="web"))
    assert result.run_state == "Succeeded"
    assert result.exit_code == 0
    assert result.template_name == "web"
    assert result.source_exact_version == "1.2.3"
    assert set(result.run_outputs) == {"target-0", "target-1"}
    assert all(o.provisioning_state == "Succeeded" for o in result.run_outputs.values())
    assert result.run_outputs["target-0"].artifact_id == "fake://target-0"
    phases = [(e.run_state, e.run_sub_state) for e in aib_events.of_kind(PhaseChanged)]
    assert phases == [
        ("Running", "Queued"),
        ("Running", "Building"),
        ("Running", "Customizing"),
        ("Running", "Validating"),
        ("Running", "Distributing"),
    ]
    build_vm, validation_vm = aib_fakes.world.machines
    assert build_vm.fake_communicator.commands[:2] == ["echo step 0", "echo step 1"]
    assert build_vm.shut_down and build_vm.captured is not None and build_vm.destroyed and not build_vm.kept
    # As in AIB, validation runs on a fresh VM booted from the captured image.
    assert validation_vm.image.path == build_vm.captured.path
    assert validation_vm.fake_communicator.commands == ["echo check 0"]
    assert validation_vm.destroyed and validation_vm.captured is None
    assert [p.run_output_name for p in aib_fakes.world.publishes] == ["target-0", "target-1"]
    assert all(p.artifact is build_vm.captured for p in aib_fakes.world.publishes)
    # The hidden deprovision step runs last on the build VM (the core's Linux one, on the fake communicator).
    phases = [s.phase for s in aib_events.of_kind(StepFinished)]
    assert phases == ["customize", "customize", "deprovision", "validate"]
    assert not (builder.staging.work).exists()
    assert result.to_dict()["lastRunStatus"]["runState"] == "Succeeded"
    assert json.loads(result.to_json()) == result.to_dict()


async def test_step_failure_with_cleanup(run_build, aib_fakes: FakePlugin):
    output = "Reading package lists...\nE: Unable to locate package nope"
    aib_fakes.world.fail_command("apt-get", exit_code=100, output=output)
    result, builder = await run_build(failing_step_template())
    assert result.run_state == "Failed"
    assert result.exit_code == 2
    assert result.last_run_status.run_sub_state == "Customizing"
    message = result.last_run_status.message
    assert "'install'" in message and "exit code 100" in message
    assert "E: Unable to locate package nope" in message and "installing" in message
    machine = aib_fakes.world.machine
    assert machine.fake_communicator.commands == ["echo hello", "echo installing", "apt-get install -y nope"]
    assert machine.destroyed and not machine.kept and not machine.shut_down
    assert aib_fakes.world.publishes == []
    assert result.run_outputs == {}
    assert not builder.staging.work.exists()


async def test_step_failure_with_abort_keeps_the_vm(run_build, aib_fakes: FakePlugin, aib_events: EventRecorder):
    aib_fakes.world.fail_command("apt-get", exit_code=100, output="E: broken")
    template = failing_step_template(errorHandling={"onCustomizerError": "abort"})
    result, builder = await run_build(template)
    assert result.run_state == "Failed"
    machine = aib_fakes.world.machine
    assert machine.kept and not machine.destroyed
    assert "ssh -p 2222 builder@127.0.0.1" in result.last_run_status.message
    assert any("ssh -p 2222" in w.message for w in aib_events.of_kind(WarningEvent))
    assert builder.staging.work.exists()  # the kept VM may still use it
    record = json.loads(builder.staging.record_file.read_text())
    assert record["details"]["keptVm"].startswith("ssh -p 2222")


async def test_validation_failure_stops_distribution(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.fail_command("check 0", exit_code=3, output="nginx is not running")
    result, _ = await run_build(fake_template(steps=1, targets=2, validations=2, name="v"))
    assert result.run_state == "Failed"
    assert result.last_run_status.run_sub_state == "Validating"
    assert "validation failed" in result.last_run_status.message
    assert "nginx is not running" in result.last_run_status.message
    assert aib_fakes.world.publishes == []
    assert "echo check 1" not in aib_fakes.world.commands
    assert len(aib_fakes.world.machines) == 2 and all(m.destroyed for m in aib_fakes.world.machines)


async def test_validation_failure_with_continue_distributes_but_fails(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.fail_command("check 0", exit_code=3, output="nginx is not running")
    template = fake_template(steps=1, targets=2, validations=1, name="v")
    template["properties"]["validate"]["continueDistributeOnFailure"] = True
    result, _ = await run_build(template)
    assert result.run_state == "Failed"
    assert "validation failed" in result.last_run_status.message
    assert [p.run_output_name for p in aib_fakes.world.publishes] == ["target-0", "target-1"]
    assert all(o.provisioning_state == "Succeeded" for o in result.run_outputs.values())


async def test_validation_failure_with_abort_keeps_the_vm(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.fail_command("check 0", exit_code=1)
    template = fake_template(steps=1, targets=1, validations=1, name="v", errorHandling={"onValidationError": "abort"})
    result, _ = await run_build(template)
    assert result.run_state == "Failed"
    assert aib_fakes.world.machine.kept and not aib_fakes.world.machine.destroyed
    assert aib_fakes.world.publishes == []


async def test_source_validation_only(run_build, aib_fakes: FakePlugin, aib_events: EventRecorder):
    template = fake_template(steps=0, targets=1, validations=2, name="src")
    del template["properties"]["customize"]
    template["properties"]["validate"]["sourceValidationOnly"] = True
    result, _ = await run_build(template)
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert aib_fakes.world.commands == ["echo check 0", "echo check 1"]
    assert aib_fakes.world.publishes == [] and result.run_outputs == {}
    machine = aib_fakes.world.machine
    assert not machine.shut_down and machine.captured is None and machine.destroyed
    assert [e.run_sub_state for e in aib_events.of_kind(PhaseChanged)][-1] == "Validating"


async def test_one_of_three_targets_failing_is_partial(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.fail_target("target-1", "quota exceeded")
    result, builder = await run_build(fake_template(steps=1, targets=3, name="p"))
    assert result.run_state == "PartiallySucceeded"
    assert result.exit_code == 3
    states = {name: out.provisioning_state for name, out in result.run_outputs.items()}
    assert states == {"target-0": "Succeeded", "target-1": "Failed", "target-2": "Succeeded"}
    assert "target-1" in result.last_run_status.message and "quota exceeded" in result.last_run_status.message
    record = json.loads(builder.staging.record_file.read_text())
    assert record["details"]["outputs"]["target-1"]["error"] == "target-1: quota exceeded"
    assert record["details"]["outputs"]["target-0"]["regions"] == {"local": "fake://local/target-0"}


async def test_all_targets_failing_is_failed(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.fail_target("target-*", "denied")
    result, _ = await run_build(fake_template(steps=1, targets=3, name="p"))
    assert result.run_state == "Failed"
    assert result.last_run_status.run_sub_state == "Distributing"
    assert all(o.provisioning_state == "Failed" for o in result.run_outputs.values())


async def test_targets_publish_concurrently_under_the_limit(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.slow_target("*", 0.2)
    start = anyio.current_time()
    result, _ = await run_build(fake_template(steps=0, targets=6, name="c"), max_parallel_targets=3)
    elapsed = anyio.current_time() - start
    assert result.run_state == "Succeeded"
    assert aib_fakes.world.max_active_publishes == 3
    assert elapsed < 6 * 0.2  # two waves of three, not six in a row


async def test_timeout_fails_and_cleans_up(run_build, aib_fakes: FakePlugin):
    aib_fakes.world.hang_command("sleep")
    template = fake_template(steps=0, targets=1, name="t")
    template["properties"]["customize"] = [{"type": "FakeStep", "name": "stuck", "commands": ["sleep 1000"]}]
    start = anyio.current_time()
    result, builder = await run_build(template, timeout=0.5)
    assert anyio.current_time() - start < 5
    assert result.run_state == "Failed"
    message = result.last_run_status.message
    assert "timed out" in message and "0.5s" in message and "Customizing" in message and "'stuck'" in message
    assert aib_fakes.world.machine.destroyed
    assert aib_fakes.world.publishes == []
    record = json.loads(builder.staging.record_file.read_text())
    assert record["lastRunStatus"]["runState"] == "Failed"
    assert record["details"]["steps"][0]["ok"] is False


async def test_build_timeout_in_minutes_is_the_default_deadline(make_builder):
    builder = make_builder(fake_template(steps=0, name="t", buildTimeoutInMinutes=7))
    result = await builder.run()
    assert result.run_state == "Succeeded"
    assert builder.plan.timeout == 7 * 60
    default = make_builder(fake_template(steps=0, name="t"))
    await default.run()
    assert default.plan.timeout == 240 * 60


async def _start_hanging_build(make_builder, aib_fakes: FakePlugin) -> tuple[Builder, anyio.abc.ObjectReceiveStream]:
    aib_fakes.world.hang_command("sleep")
    template = fake_template(steps=0, targets=1, name="c")
    template["properties"]["customize"] = [{"type": "FakeStep", "name": "stuck", "commands": ["sleep 1000"]}]
    builder = make_builder(template)
    return builder, builder.events()


async def _wait_for_step(events) -> None:
    async for event in events:
        if isinstance(event, StepStarted) and event.name == "stuck":
            return
    raise AssertionError("the step never started")


async def test_cancel_via_builder_cancel(make_builder, aib_fakes: FakePlugin, aib_events: EventRecorder):
    builder, events = await _start_hanging_build(make_builder, aib_fakes)
    results = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                results.append(await builder.run())

            tg.start_soon(run)
            await _wait_for_step(events)
            await anyio.sleep(0.05)
            await builder.cancel()
            assert results and results[0].run_state == "Canceled"
    result = results[0]
    assert result.exit_code == 130
    assert "canceled during Customizing" in result.last_run_status.message
    assert aib_fakes.world.machine.destroyed
    assert ("Canceling", "Customizing") in [(e.run_state, e.run_sub_state) for e in aib_events.of_kind(PhaseChanged)]
    assert aib_events.of_kind(RunFinished)[-1].run_state == "Canceled"
    assert json.loads(builder.staging.record_file.read_text())["lastRunStatus"]["runState"] == "Canceled"


async def test_cancel_via_task_cancellation_reraises(make_builder, aib_fakes: FakePlugin, aib_events: EventRecorder):
    builder, events = await _start_hanging_build(make_builder, aib_fakes)
    reached_end = False
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                nonlocal reached_end
                await builder.run()
                reached_end = True  # pragma: no cover - run() must re-raise the cancellation

            tg.start_soon(run)
            await _wait_for_step(events)
            tg.cancel_scope.cancel()
    assert not reached_end
    assert builder.result is not None and builder.result.run_state == "Canceled"
    assert aib_fakes.world.machine.destroyed
    assert aib_events.of_kind(RunFinished)[-1].run_state == "Canceled"
    log = builder.staging.log_file.read_text()
    assert log.rstrip().endswith("(telemetry) Finalizing.")
    assert json.loads(builder.staging.record_file.read_text())["lastRunStatus"]["runState"] == "Canceled"


async def test_missing_params_are_listed_at_once(make_builder, aib_events: EventRecorder):
    template = fake_template(steps=0, targets=0, name="p")
    template["properties"]["customize"] = [{"type": "FakeStep", "commands": ["echo <greeting>", "echo <Audience>"]}]
    template["properties"]["distribute"] = [{"type": "FakeTarget", "runOutputName": "<outputName>"}]
    builder = make_builder(template, params={"audience": "world"})
    with pytest.raises(MissingParamsError) as info:
        await builder.run()
    assert info.value.names == ["greeting", "outputName"]
    assert "--param greeting=VALUE" in str(info.value) and "--param outputName=VALUE" in str(info.value)
    assert aib_events.events == []  # nothing started
    filled = make_builder(template, params={"greeting": "hi", "audience": "world", "outputName": "out"})
    result = await filled.run()
    assert result.run_state == "Succeeded"
    assert set(result.run_outputs) == {"out"}


async def test_a_builder_runs_once(make_builder):
    builder = make_builder(fake_template(steps=0, name="once"))
    await builder.run()
    with pytest.raises(Exception, match="runs once"):
        await builder.run()
