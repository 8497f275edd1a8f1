"""``python targets_scenario.py ADDRESS TASK_QUEUE TEMPLATE.json [cancel]``: submits one build on the fake
providers of :mod:`fake_aib` (with ``cancel``: cancels it once a target is publishing), waits for it and prints one
JSON object: its result, events and attempts, and every activity the workflow history holds (type, target, last
attempt, how it ended)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from fake_aib import fake_plugins
from temporalio.api.enums.v1 import EventType

from aib_sdk.config import Config
from aib_sdk.engines.temporal import TemporalEngine, TemporalSettings
from aib_sdk.options import BuildOptions

ENDS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "completed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "failed",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "timed-out",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "canceled",
}


async def _cancel_when_publishing(run: Any) -> None:
    async for event in run.events(poll=0.1):
        if event.kind == "target" and event.state == "Running":
            await run.cancel()
            return


async def scenario(address: str, queue: str, template: str, cancel: bool = False) -> dict[str, Any]:
    settings = TemporalSettings(address=address, task_queue=queue, heartbeat_timeout=10)
    engine = TemporalEngine(settings)
    options = BuildOptions(plugins=fake_plugins(), config=Config({}))
    run = await engine.submit(json.loads(Path(template).read_text()), options)
    if cancel:
        await _cancel_when_publishing(run)
    result = (await run.result()).to_dict()
    progress = await run.progress()
    client = await settings.connect()
    scheduled: dict[int, dict[str, Any]] = {}
    activities: list[dict[str, Any]] = []
    async for ev in client.get_workflow_handle(run.run_id).fetch_history_events():
        if ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = ev.activity_task_scheduled_event_attributes
            payload = json.loads(attrs.input.payloads[0].data)
            scheduled[ev.event_id] = {"type": attrs.activity_type.name, "target": payload.get("target")}
        elif ev.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:  # written for the last attempt only
            attrs = ev.activity_task_started_event_attributes
            scheduled[attrs.scheduled_event_id]["attempt"] = attrs.attempt
        elif ev.event_type in ENDS:
            attrs = getattr(ev, str(ev.WhichOneof("attributes")))
            activities.append({**scheduled[attrs.scheduled_event_id], "end": ENDS[ev.event_type]})
    return {"result": result, "events": progress["events"], "attempts": progress["attempts"], "activities": activities}


if __name__ == "__main__":
    print(json.dumps(anyio.run(scenario, *sys.argv[1:4], sys.argv[4:] == ["cancel"]), default=str))
    sys.stdout.flush()
    os._exit(0)
