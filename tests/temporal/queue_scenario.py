"""``python queue_scenario.py ADDRESS TASK_QUEUE COUNT SLEEP``: the submitter of the queue tests. Submits COUNT
builds at once on the fake providers of :mod:`fake_aib` (every other one needs ``fake-extra`` too, so they go to
both of a worker's task queues), each with a step of SLEEP seconds; waits for all; prints one JSON list: each
build's result with the worker and attempts that ran it. ``… events RUN_ID`` prints the kinds of a run's events
(``RemoteRun.events``)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio
from fake_aib import fake_plugins

from aib_sdk.config import Config
from aib_sdk.engines.temporal import TemporalEngine, TemporalSettings
from aib_sdk.options import BuildOptions


def template(i: int, sleep: float) -> dict[str, Any]:
    return {
        "source": {"type": "FakeImage"},
        "customize": [{"type": "ExtraStep" if i % 2 else "FakeStep", "name": "work", "sleep": sleep}],
        "distribute": [{"type": "FakeTarget", "runOutputName": "out"}],
    }


async def scenario(address: str, queue: str, count: int, sleep: float) -> list[dict[str, Any]]:
    plugins = fake_plugins()
    options = BuildOptions(plugins=plugins, config=Config({}))
    engine = TemporalEngine(TemporalSettings(address=address, task_queue=queue, heartbeat_timeout=10))
    runs = [await engine.submit(template(i, sleep), options) for i in range(count)]
    results: list[dict[str, Any]] = []

    async def wait(run: Any) -> None:
        result = (await run.result()).to_dict()
        attempts = (await run.progress())["attempts"]
        results.append({**result, "queue": run.task_queue, "attempts": attempts, "worker": attempts[-1]["worker"]})

    async with anyio.create_task_group() as tg:
        for run in runs:
            tg.start_soon(wait, run)
    return results


async def event_kinds(address: str, queue: str, run_id: str) -> list[str]:
    engine = TemporalEngine(TemporalSettings(address=address, task_queue=queue))
    return [event.kind async for event in (await engine.run(run_id)).events(poll=0.1)]


if __name__ == "__main__":
    if sys.argv[3] == "events":
        data: Any = anyio.run(event_kinds, sys.argv[1], sys.argv[2], sys.argv[4])
    else:
        data = anyio.run(scenario, sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    print(json.dumps(data, default=str))
    sys.stdout.flush()
    os._exit(0)
