"""Temporal scale-out benchmark: N tiny-guest builds through a real dev server and 2 ``aib worker`` processes
(1 build each) vs the same N builds run locally 2 at a time with ``Builder``, in one run.

Both sides run the same template (tiny guest, one Shell step, a qcow2 ``DiskFile`` output) on the same cached
guest, 2 builds at a time. Workers and the server start before the clock. The orchestration overhead per build is
the median time a remote build spends outside its own run (submit → result minus the run's start-to-end time on
the worker: planning and upload on the submitter, the workflow and activity tasks, the event signals, the result)
minus the same for a local build (``Builder.run()`` minus its start-to-end time). The wall-clock difference
``(remote - local) / (N / 2)`` is printed too; it also holds the load of other processes on a shared machine.
The median Distributing phase (its start to the run's end) is printed for both sides: remotely each target is an
activity of its own, dispatched through the workflow, which falls inside the run's time.
Goal: < 1 s per build. Usage: ``python benchmarks/bench_temporal.py [--builds N] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.result import BuildResult
from aib_sdk.runtime import bounded_map
from aib_sdk.testing.tiny_guest import SPEC, ensure_tiny_guest

BIN = Path(sys.executable).parent
GOAL = 1.0
LANES = 2


def template(out: Path, index: int) -> dict[str, Any]:
    return {
        "name": f"bench-temporal-{index}",
        "properties": {
            "source": dict(SPEC),
            "customize": [{"type": "Shell", "name": "step", "inline": [f"echo build-{index} | sudo tee /etc/bench"]}],
            "distribute": [{"type": "DiskFile", "uri": out.as_uri(), "format": "qcow2", "runOutputName": "disk"}],
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(address: str, timeout: float = 90) -> None:
    """Wait until the server answers a workflow lookup (its port opens before its history shards are up)."""
    deadline = time.monotonic() + timeout
    probe = [str(BIN / "temporal"), "workflow", "describe", "--address", address, "-w", "aib-readiness-probe"]
    while time.monotonic() < deadline:
        out = subprocess.run(probe, capture_output=True, text=True, check=False, timeout=30)
        if "not found" in (out.stdout + out.stderr).lower():
            return
        time.sleep(0.2)
    raise SystemExit(f"temporal at {address} was not ready")


Timing = tuple[float, float, float]
"""Seconds outside the build's own run, the run's time, and its Distributing phase."""


def _timing(result: BuildResult, elapsed: float, events: list[dict[str, Any]]) -> Timing:
    status = result.last_run_status
    assert status.start_time and status.end_time
    run = (status.end_time - status.start_time).total_seconds()
    marks = {e["kind"] if e["kind"] != "phase" else e["run_sub_state"]: e["time"] for e in events}
    begin, end = (
        datetime.fromisoformat(str(marks[k]).replace("Z", "+00:00")) for k in ("Distributing", "run-finished")
    )
    return elapsed - run, run, (end - begin).total_seconds()


async def run_local(work: Path, builds: int, cache: Path) -> tuple[float, list[Timing]]:
    env = {**os.environ, "AIB_HOME": str(work / "local-home"), "AIB_CACHE": str(cache)}
    config = Config({}, env)

    async def one(index: int) -> Timing:
        out = work / "local" / f"{index}.qcow2"
        events: list[dict[str, Any]] = []
        options = BuildOptions(config=config, cache=False, on_event=lambda e: events.append(e.model_dump(mode="json")))
        started = time.perf_counter()
        result = await Builder(template(out, index), options=options).run()
        if result.run_state != "Succeeded":
            raise SystemExit(f"local build {index}: {result.run_state} {result.last_run_status.message}")
        return _timing(result, time.perf_counter() - started, events)

    started = time.perf_counter()
    outside = await bounded_map(one, range(builds), LANES)
    return time.perf_counter() - started, outside


async def run_remote(work: Path, builds: int, address: str, queue: str) -> tuple[float, list[Timing]]:
    from aib_sdk.engines.temporal import TemporalEngine, TemporalSettings

    engine = TemporalEngine(TemporalSettings(address=address, task_queue=queue))
    config = Config({}, {**os.environ, "AIB_HOME": str(work / "submit-home")})

    async def one(index: int) -> Timing:
        out = work / "remote" / f"{index}.qcow2"
        started = time.perf_counter()
        run = await engine.submit(template(out, index), BuildOptions(config=config, cache=False))
        result = await run.result()
        elapsed = time.perf_counter() - started
        if result.run_state != "Succeeded":
            raise SystemExit(f"remote build {index}: {result.run_state} {result.last_run_status.message}")
        return _timing(result, elapsed, (await run.snapshot())["events"])

    started = time.perf_counter()
    outside = await bounded_map(one, range(builds), LANES)  # 2 lanes for 2 one-build workers: no queueing
    return time.perf_counter() - started, outside


def start_workers(work: Path, address: str, queue: str, cache: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for name in ("w1", "w2"):
        env = {**os.environ, "AIB_HOME": str(work / name), "AIB_CACHE": str(cache)}
        env.pop("AIB_CONFIG", None)
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115
        cmd = [str(BIN / "aib"), "worker", "--temporal", address, "--task-queue", queue, "--max-builds", "1"]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    for name in ("w1", "w2"):
        deadline = time.monotonic() + 90
        while "aib worker: up to" not in (work / f"{name}.log").read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise SystemExit(f"worker {name} did not start")
            time.sleep(0.2)
    return procs


async def measure(work: Path, builds: int, address: str, cache: Path) -> dict[str, Any]:
    local, local_outside = await run_local(work, builds, cache)
    print(f"{builds} builds locally, {LANES} at a time: {local:.1f} s", file=sys.stderr)
    remote, remote_outside = await run_remote(work, builds, address, "bench")
    print(f"{builds} builds through Temporal (2 workers): {remote:.1f} s", file=sys.stderr)
    overhead = statistics.median(t[0] for t in remote_outside) - statistics.median(t[0] for t in local_outside)
    return {
        "benchmark": "temporal",
        "builds": builds,
        "remote_seconds": round(remote, 2),
        "local_seconds": round(local, 2),
        "ratio": round(remote / local, 3),
        "median_run_seconds_local": round(statistics.median(t[1] for t in local_outside), 2),
        "median_run_seconds_remote": round(statistics.median(t[1] for t in remote_outside), 2),
        "median_distributing_seconds_local": round(statistics.median(t[2] for t in local_outside), 2),
        "median_distributing_seconds_remote": round(statistics.median(t[2] for t in remote_outside), 2),
        "wall_difference_per_build_seconds": round((remote - local) / (builds / LANES), 2),
        "overhead_per_build_seconds": round(overhead, 2),
        "goal_seconds": GOAL,
        "load_average": os.getloadavg()[0],
    }


def main(builds: int) -> dict[str, Any]:
    config = Config.load()
    anyio.run(ensure_tiny_guest, config.cache)
    work = Path(tempfile.mkdtemp(prefix="aib-bench-temporal-"))
    (work / "local").mkdir()
    (work / "remote").mkdir()
    port = free_port()
    cmd = [str(BIN / "temporal"), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless"]
    cmd += ["--http-port", str(free_port()), "--metrics-port", str(free_port())]
    cmd += ["--db-filename", str(work / "temporal.db")]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        address = f"127.0.0.1:{port}"
        wait_ready(address)
        workers = start_workers(work, address, "bench", config.cache)
        return anyio.run(measure, work, builds, address, config.cache)
    finally:
        for proc in [*workers, server]:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in [*workers, server]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = main(args.builds)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['builds']} tiny-guest builds: Temporal {report['remote_seconds']:.1f} s, local "
            f"{report['local_seconds']:.1f} s ({LANES} at a time), ratio {report['ratio']:.2f}x; orchestration "
            f"overhead {report['overhead_per_build_seconds']:.2f} s per build (goal < {GOAL} s; wall-clock "
            f"difference {report['wall_difference_per_build_seconds']:.2f} s per build); Distributing "
            f"{report['median_distributing_seconds_remote']:.2f} s remotely (one activity per target) vs "
            f"{report['median_distributing_seconds_local']:.2f} s locally (medians)"
        )
    sys.stdout.flush()
    os._exit(0)  # temporalio's native threads can abort interpreter shutdown (temporalio/sdk-python#300)
