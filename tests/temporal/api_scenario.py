"""Run by test_temporal_api.py in its own process (temporalio's native threads must not live in pytest's): an
in-process ``run_worker`` with the fake providers, and the Python API submitting to it. Prints one JSON report."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import anyio

from aib_sdk.config import Config
from aib_sdk.engines.temporal import TemporalEngine, TemporalSettings
from aib_sdk.engines.temporal.worker import run_worker
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import fake_plugin


def template(sleep: float) -> dict[str, Any]:
    return {
        "source": {"type": "FakeImage"},
        "customize": [{"type": "FakeStep", "name": "work", "commands": ["echo from-the-fake-step"], "sleep": sleep}],
        "distribute": [{"type": "FakeTarget", "runOutputName": "out"}],
    }


async def scenario(address: str, queue: str) -> dict[str, Any]:
    plugins = PluginManager(entry_points=False, plugins=[fake_plugin()], disabled=())
    config = Config({})
    settings = TemporalSettings(address=address, task_queue=queue, heartbeat_timeout=10)
    report: dict[str, Any] = {}
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def worker() -> None:
            await run_worker(settings, plugins, config, max_builds=2, grace=0, on_ready=lambda c, q: ready.set())

        tg.start_soon(worker)
        await ready.wait()
        engine = TemporalEngine(settings)
        run = await engine.submit(template(0), BuildOptions(plugins=plugins, config=config))
        kinds: list[str] = []
        logs: list[str] = []
        async for event in run.events():
            kinds.append(event.kind)
            if event.kind == "log":
                logs.append(event.line)
        result = await run.result()
        report["ok"] = {"kinds": kinds, "logs": logs, "result": result.to_json(), "runId": run.run_id}

        slow = await engine.submit(template(120), BuildOptions(plugins=plugins, config=config))
        async for event in slow.events():
            if event.kind == "step-started":
                await slow.cancel()
        canceled = await slow.result()
        report["canceled"] = {"result": canceled.to_json(), "state": (await slow.progress())["state"]}
        report["runs"] = await engine.list_runs()
        tg.cancel_scope.cancel()
    report["handed_back"] = await hand_back(settings, plugins, config)
    return report


async def hand_back(settings: TemporalSettings, plugins: PluginManager, config: Config) -> dict[str, Any]:
    """A worker stopping mid-build (grace 0) hands the build back; a second worker finishes it."""
    engine = TemporalEngine(settings)
    first_ready, second_ready = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        first = anyio.CancelScope()

        async def worker_a() -> None:
            with first:
                await run_worker(
                    settings, plugins, config, grace=0, identity="a", on_ready=lambda c, q: first_ready.set()
                )

        tg.start_soon(worker_a)
        await first_ready.wait()
        run = await engine.submit(template(3), BuildOptions(plugins=plugins, config=config))
        async for event in run.events():
            if event.kind == "step-started":
                break
        first.cancel()  # as SIGTERM does: stop, then cancel and hand back what still runs

        async def worker_b() -> None:
            await run_worker(settings, plugins, config, identity="b", on_ready=lambda c, q: second_ready.set())

        tg.start_soon(worker_b)
        result = await run.result()
        progress = await run.progress()
        tg.cancel_scope.cancel()
    return {"result": result.to_json(), "attempts": progress["attempts"]}


if __name__ == "__main__":
    data = anyio.run(scenario, sys.argv[1], sys.argv[2])
    print(json.dumps(data, default=str))
    sys.stdout.flush()
    os._exit(0)
