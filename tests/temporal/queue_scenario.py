"""``python queue_scenario.py ADDRESS TASK_QUEUE COUNT SLEEP``: the submitter of the queue tests. Submits COUNT
builds at once on the fake providers of :mod:`fake_aib` (every other one needs ``fake-extra`` too, so they go to
both of a worker's task queues), each with a step of SLEEP seconds; waits for all; prints one JSON list: each
build's result with the worker and attempts that ran it. ``… files T1.json T2.json …`` does the same for those
templates with the installed providers; ``… events RUN_ID`` prints the kinds of a run's events
(``RemoteRun.events``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from fake_aib import fake_plugins

from aib_sdk.config import Config
from aib_sdk.engines.temporal import TemporalEngine, TemporalSettings
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager


def template(i: int, sleep: float) -> dict[str, Any]:
    return {
        "source": {"type": "FakeImage"},
        "customize": [{"type": "ExtraStep" if i % 2 else "FakeStep", "name": "work", "sleep": sleep}],
        "distribute": [{"type": "FakeTarget", "runOutputName": "out"}],
    }


async def scenario(address: str, queue: str, templates: list[Any], options: BuildOptions) -> list[dict[str, Any]]:
    engine = TemporalEngine(TemporalSettings(address=address, task_queue=queue, heartbeat_timeout=10))
    runs = [await engine.submit(t, options) for t in templates]
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
    address, queue, what, *rest = sys.argv[1:]
    if what == "events":
        data: Any = anyio.run(event_kinds, address, queue, rest[0])
    elif what == "files":
        options = BuildOptions(plugins=PluginManager(), config=Config.load(None))
        data = anyio.run(scenario, address, queue, [Path(f) for f in rest], options)
    else:
        options = BuildOptions(plugins=fake_plugins(), config=Config({}))
        data = anyio.run(scenario, address, queue, [template(i, float(rest[0])) for i in range(int(what))], options)
    print(json.dumps(data, default=str))
    sys.stdout.flush()
    os._exit(0)
