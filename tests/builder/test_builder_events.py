"""The event stream's guarantees: no repeated progress, and every region ends in a final state."""

from __future__ import annotations

import json

import anyio
import pytest

from aib_sdk.builder.hub import EventHub
from aib_sdk.errors import BuildCancelled, BuildError, BuildTimeout
from aib_sdk.events import Progress, RunFinished, TargetStatus
from aib_sdk.testing.fakes import FakePlugin, fake_template
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio


def test_a_repeated_progress_event_is_dropped() -> None:
    recorder = EventRecorder()
    hub = EventHub(recorder)
    for done in (0, 50, 100, 100):  # a tool reports 100 %, and its caller reports it again
        hub.emit(Progress(task="convert", label="disk", done=done, total=100))
    hub.emit(Progress(task="upload", label="disk", done=100, total=100))  # another operation: kept
    hub.emit(Progress(task="convert", label="disk", done=100, total=100, region="west"))  # another region: kept
    assert [(p.task, p.done, p.region) for p in recorder.of_kind(Progress)] == [
        ("convert", 0, None),
        ("convert", 50, None),
        ("convert", 100, None),
        ("upload", 100, None),
        ("convert", 100, "west"),
    ]


async def test_regions_end_canceled_when_the_run_is_cancelled(make_builder, aib_events: EventRecorder) -> None:
    template = fake_template(steps=0, targets=0, name="regions")
    template["properties"]["distribute"] = [
        {"type": "FakeTarget", "runOutputName": "slow", "regions": ["east", "west"], "delay": 60}
    ]
    builder = make_builder(template)
    events = builder.events()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(builder.run)
            async for event in events:
                if isinstance(event, TargetStatus) and event.region == "west" and event.state == "Running":
                    break
            await builder.cancel()
    assert builder.result is not None and builder.result.run_state == "Canceled"
    last: dict[str | None, str] = {}
    for status in aib_events.of_kind(TargetStatus):
        last[status.region] = status.state
    assert last["east"] == last["west"] == "Canceled"
    assert "Running" not in last.values()
    kinds = [type(e).__name__ for e in aib_events.events]
    assert kinds.index("RunFinished") > max(i for i, k in enumerate(kinds) if k == "TargetStatus")
    assert aib_events.of_kind(RunFinished)[-1].run_state == "Canceled"


async def test_raise_for_state_raises_the_documented_errors(run_build, aib_fakes: FakePlugin) -> None:
    ok, _ = await run_build(fake_template(name="fine"))
    assert ok.raise_for_state() is ok
    assert json.loads(ok.to_json()) == ok.to_dict() and ok.to_dict()["lastRunStatus"]["runState"] == "Succeeded"
    slow = fake_template(steps=0, name="slow")
    slow["properties"]["customize"] = [{"type": "FakeStep", "name": "stuck", "sleep": 60}]
    timed_out, _ = await run_build(slow, timeout=0.5)
    assert timed_out.run_state == "Failed"
    with pytest.raises(BuildTimeout, match=r"slow run .*: Failed: build timed out"):
        timed_out.raise_for_state()
    broken = fake_template(steps=0, name="broken")
    broken["properties"]["customize"] = [{"type": "FakeStep", "name": "bad", "commands": ["make install"]}]
    aib_fakes.world.fail_command("make install", exit_code=3)
    failed, _ = await run_build(broken)
    with pytest.raises(BuildError) as info:
        failed.raise_for_state()
    assert type(info.value) is BuildError and "bad" in str(info.value)


async def test_a_cancelled_run_raises_build_cancelled(make_builder) -> None:
    template = fake_template(steps=0, name="stop")
    template["properties"]["customize"] = [{"type": "FakeStep", "name": "stuck", "sleep": 60}]
    builder = make_builder(template)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(builder.run)
            async for event in builder.events():
                if getattr(event, "name", None) == "stuck":
                    break
            await builder.cancel()
    with pytest.raises(BuildCancelled, match="Canceled"):
        builder.result.raise_for_state()
