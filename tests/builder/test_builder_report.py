"""The run report, the one cancel flag and the distribution entry point, on the test fakes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from aib_sdk.artifacts import Artifact
from aib_sdk.builder.cancellation import Cancellation
from aib_sdk.builder.distribution import Distribution, publish_target
from aib_sdk.builder.plan import make_plan
from aib_sdk.builder.report import RunRecorder, RunReport, TargetOutcome, step_entry
from aib_sdk.events import Event, PhaseChanged, StepFinished, StepStarted, TargetStatus, WarningEvent
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import FakePlugin, fake_template, make_run_context
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio


def test_a_report_cannot_be_changed() -> None:
    report = RunReport(
        run_id="r",
        template_name="t",
        template_digest="d",
        run_state="Succeeded",
        run_sub_state="Distributing",
        message="",
        start_time=None,
        end_time=None,
        outputs={"a": TargetOutcome("a", "Fake", "Succeeded")},
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.run_state = "Failed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.outputs["a"].state = "Failed"  # type: ignore[misc]
    status = report.status()
    status.run_state = "Failed"  # the result's status is a copy
    assert report.run_state == "Succeeded"


def test_the_recorder_keeps_redacted_warnings_and_steps_and_forwards_everything() -> None:
    seen: list[Event] = []
    recorder = RunRecorder(seen.append)
    recorder.emit(WarningEvent(message="fetching https://example.test/x?sig=SECRET failed"))
    recorder.emit(StepStarted(phase="customize", index=0, name="s", type="Shell"))
    assert len(seen) == 2 and recorder.steps == []
    assert "SECRET" not in recorder.warnings[0] and recorder.warnings[0].startswith("fetching https://example.test/x")
    assert step_entry(StepFinished(phase="customize", index=0, name="s", type="Shell", ok=True, duration=1.23456)) == {
        "phase": "customize",
        "index": 0,
        "name": "s",
        "type": "Shell",
        "ok": True,
        "duration": 1.235,
        "exitCode": None,
        "error": None,
        "cached": False,
        "layer": None,
    }


async def test_cancel_is_recorded_once_and_the_report_says_canceled(
    make_builder, aib_fakes: FakePlugin, aib_events: EventRecorder
):
    aib_fakes.world.hang_command("stuck")
    template = fake_template(steps=0, targets=1, name="hang")
    template["properties"]["customize"] = [{"type": "FakeStep", "name": "stuck", "commands": ["stuck"]}]  # type: ignore[index]
    builder = make_builder(template)
    events = builder.events()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(builder.run)
            async for event in events:
                if isinstance(event, StepStarted) and event.name == "stuck":
                    break
            tg.start_soon(builder.cancel)
            await builder.cancel()
    assert builder.result is not None and builder.result.run_state == "Canceled"
    canceling = [e for e in aib_events.of_kind(PhaseChanged) if e.run_state == "Canceling"]
    assert len(canceling) == 1
    record = json.loads(builder.staging.record_file.read_text())
    assert record["details"]["steps"][-1]["error"] == "canceled"


async def test_a_cancel_before_the_run_starts_ends_it_canceled(make_builder, aib_fakes: FakePlugin):
    builder = make_builder(fake_template(steps=1, targets=1, name="early"))
    await builder.cancel()  # nothing runs yet: remembered
    result = await builder.run()
    assert result.run_state == "Canceled"
    assert aib_fakes.world.machines == []


async def test_a_cancellation_counts_once() -> None:
    calls: list[str] = []
    cancellation = Cancellation()
    with anyio.CancelScope() as scope:
        cancellation.attach(scope, lambda: calls.append("canceling"))
        cancellation.request()
        cancellation.request()
        await anyio.lowlevel.checkpoint()  # the scope's cancellation ends the block here
    assert calls == ["canceling"] and scope.cancelled_caught


async def test_publish_target_is_usable_on_its_own(tmp_path: Path, aib_plugins, aib_fakes: FakePlugin, aib_home):
    """The entry point an engine uses per target: one artifact, one target plan, one context."""
    recorder = EventRecorder()
    options = BuildOptions(config=aib_home, plugins=aib_plugins, build_host="fake")
    plan = await make_plan(fake_template(steps=0, targets=2, name="d"), options)
    ctx = make_run_context(tmp_path, config=aib_home, plugins=aib_plugins, emit=recorder, options=options)
    artifact_path = tmp_path / "disk.raw"
    artifact_path.write_bytes(b"\0" * 512)
    artifact = Artifact(path=artifact_path, format="raw", virtual_size=512)
    outcome = await publish_target(artifact, plan.targets[0], ctx)
    assert outcome.state == "Succeeded" and outcome.artifact_id == "fake://target-0"
    states = [(e.run_output_name, e.state) for e in recorder.of_kind(TargetStatus) if e.region is None]
    assert states == [("target-0", "Running"), ("target-0", "Succeeded")]
    aib_fakes.world.fail_target("target-1")
    distribution = Distribution(plan.targets, ctx)
    await distribution.publish(artifact)
    assert {n: o.state for n, o in distribution.outcomes.items()} == {"target-0": "Succeeded", "target-1": "Failed"}
    state, message = distribution.verdict(None)
    assert state == "PartiallySucceeded" and message.startswith("1 of 2 target(s) failed: target-1:")
