"""Build slots and queues on a real Temporal dev server with real ``aib worker`` processes, on the fake providers
of :mod:`fake_aib` (no VM): a worker never runs more than ``--max-builds`` builds, whichever of its task queues
they come from, and a queue of builds drains across workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def _most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda p: (p[0], p[1]))
    running = most = 0
    for _, step in points:
        running += step
        most = max(most, running)
    return most


class FakeCluster:
    def __init__(self, address: str, root: Path) -> None:
        self.address = address
        self.root = root
        self.queue = f"aib-fake-{root.name}"
        self.workers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def env(self, name: str) -> dict[str, str]:
        env = dict(os.environ, AIB_HOME=str(self.root / name), AIB_CACHE=str(self.root / name / "cache"))
        env.update(AIB_TEMPORAL_TASK_QUEUE=self.queue, AIB_TEMPORAL_HEARTBEAT_TIMEOUT="10")
        env.pop("AIB_CONFIG", None)
        return env

    def start_worker(self, name: str, max_builds: int) -> str:
        """Start ``aib worker --max-builds N``; return its identity."""
        log = self.root / f"{name}.log"
        (self.root / name).mkdir(parents=True)
        with open(log, "wb") as out:
            cmd = [sys.executable, str(HERE / "fake_aib.py"), "worker", "--temporal", self.address]
            proc = subprocess.Popen(
                [*cmd, "--max-builds", str(max_builds), "--grace", "5"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(name),
            )
        self.workers[name] = (proc, log)
        deadline = time.monotonic() + 60
        while "aib worker: up to" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert "2 queue(s)" in log.read_text()
        return f"aib@{os.uname().nodename}:{proc.pid}"

    def submit(self, count: int, sleep: float) -> list[dict[str, Any]]:
        cmd = [sys.executable, str(HERE / "queue_scenario.py"), self.address, self.queue, str(count), str(sleep)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env("submitter"), timeout=150)
        logs = "".join(log.read_text()[-2000:] for _, log in self.workers.values())
        assert proc.returncode == 0, proc.stderr[-4000:] + logs
        results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
        return results


@pytest.fixture
def fake_cluster(temporal_server: str, tmp_path: Path) -> Iterator[FakeCluster]:
    cluster = FakeCluster(temporal_server, tmp_path)
    try:
        yield cluster
    finally:
        for proc, _ in cluster.workers.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc, _ in cluster.workers.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _spans(results: list[dict[str, Any]]) -> dict[str, list[tuple[datetime, datetime]]]:
    by_worker: dict[str, list[tuple[datetime, datetime]]] = {}
    for r in results:
        status = r["lastRunStatus"]
        span = (datetime.fromisoformat(status["startTime"]), datetime.fromisoformat(status["endTime"]))
        by_worker.setdefault(r["worker"], []).append(span)
    return by_worker


def test_one_slot_holds_across_the_workers_task_queues(fake_cluster: FakeCluster) -> None:
    """Two builds at once on the two task queues of a ``--max-builds 1`` worker: one after the other, and the one
    handed back for want of a slot uses no attempt."""
    worker = fake_cluster.start_worker("solo", max_builds=1)
    results = fake_cluster.submit(2, 2.0)
    assert [r["lastRunStatus"]["runState"] for r in results] == ["Succeeded"] * 2
    assert len({r["queue"] for r in results}) == 2
    assert [[a["attempt"] for a in r["attempts"]] for r in results] == [[1], [1]]
    spans = _spans(results)
    assert list(spans) == [worker]
    assert _most_at_once(spans[worker]) == 1, spans


def test_twenty_builds_drain_across_workers_within_their_caps(fake_cluster: FakeCluster) -> None:
    caps = {fake_cluster.start_worker("a", max_builds=2): 2, fake_cluster.start_worker("b", max_builds=1): 1}
    results = fake_cluster.submit(20, 1.0)
    assert len({r["runId"] for r in results}) == 20
    assert all(r["lastRunStatus"]["runState"] == "Succeeded" for r in results)
    assert all(len(r["attempts"]) == 1 for r in results)
    spans = _spans(results)
    assert set(spans) == set(caps), {w: len(s) for w, s in spans.items()}  # both took builds
    for worker, worker_spans in spans.items():
        assert _most_at_once(worker_spans) <= caps[worker], (worker, worker_spans)
    big = next(w for w, cap in caps.items() if cap == 2)
    assert _most_at_once(spans[big]) == 2  # the larger worker did run two at once
