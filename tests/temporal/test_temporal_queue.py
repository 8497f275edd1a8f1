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
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


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

    def logs(self) -> str:
        return "".join(log.read_text()[-2000:] for _, log in self.workers.values())

    def start_publishing(self, targets: list[dict[str, Any]], *extra: str) -> subprocess.Popen[bytes]:
        """Start ``targets_scenario.py`` on a one-step build publishing to ``targets``."""
        template = self.root / f"targets-{len(list(self.root.glob('targets-*.json')))}.json"
        step = {"type": "FakeStep", "name": "work", "commands": ["echo w"]}
        template.write_text(json.dumps({"source": {"type": "FakeImage"}, "customize": [step], "distribute": targets}))
        cmd = [sys.executable, str(HERE / "targets_scenario.py"), self.address, self.queue, str(template), *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env("submitter"))

    def published(self, proc: subprocess.Popen[bytes], timeout: float = 120) -> dict[str, Any]:
        """What ``targets_scenario.py`` printed (its result, events, attempts and activities)."""
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, stderr.decode()[-4000:] + self.logs()
        data: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return data

    def submit(self, count: int, sleep: float) -> list[dict[str, Any]]:
        cmd = [sys.executable, str(HERE / "queue_scenario.py"), self.address, self.queue, str(count), str(sleep)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env("submitter"), timeout=150)
        assert proc.returncode == 0, proc.stderr[-4000:] + self.logs()
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


def _target_states(events: list[dict[str, Any]], name: str) -> list[str]:
    return [
        e["state"] for e in events if e["kind"] == "target" and e["region"] is None and e["run_output_name"] == name
    ]


def test_one_slot_holds_across_the_workers_task_queues(fake_cluster: FakeCluster, most_at_once: Any) -> None:
    """Two builds at once on the two task queues of a ``--max-builds 1`` worker: one after the other, and the one
    handed back for want of a slot uses no attempt."""
    worker = fake_cluster.start_worker("solo", max_builds=1)
    results = fake_cluster.submit(2, 2.0)
    assert [r["lastRunStatus"]["runState"] for r in results] == ["Succeeded"] * 2
    assert len({r["queue"] for r in results}) == 2
    assert [[a["attempt"] for a in r["attempts"]] for r in results] == [[1], [1]]
    assert most_at_once(results) == {worker: 1}


def test_twenty_builds_drain_across_workers_within_their_caps(fake_cluster: FakeCluster, most_at_once: Any) -> None:
    caps = {fake_cluster.start_worker("a", max_builds=2): 2, fake_cluster.start_worker("b", max_builds=1): 1}
    results = fake_cluster.submit(20, 1.0)
    assert len({r["runId"] for r in results}) == 20
    assert all(r["lastRunStatus"]["runState"] == "Succeeded" for r in results)
    assert all(len(r["attempts"]) == 1 for r in results)
    assert most_at_once(results) == caps  # both took builds, each ran up to its cap at once and never more


def test_each_target_is_an_activity_retried_on_its_own(fake_cluster: FakeCluster) -> None:
    """Three targets of one build: one publishes at once, one fails once and succeeds on its retry, one fails every
    attempt. The run ends PartiallySucceeded naming the broken one; the build itself ran once."""
    fake_cluster.start_worker("w", max_builds=1)
    targets = [
        {"type": "FakeTarget", "runOutputName": "steady"},
        {"type": "FlakyTarget", "runOutputName": "flaky", "failures": 1},
        {"type": "FakeTarget", "runOutputName": "broken", "fail": "boom"},
    ]
    data = fake_cluster.published(fake_cluster.start_publishing(targets))
    status = data["result"]["lastRunStatus"]
    assert status["runState"] == "PartiallySucceeded", status
    assert "1 of 3 target(s) failed" in status["message"] and "broken" in status["message"]
    outputs = {name: out["provisioningState"] for name, out in data["result"]["runOutputs"].items()}
    assert outputs == {"steady": "Succeeded", "flaky": "Succeeded", "broken": "Failed"}
    assert data["result"]["runOutputs"]["flaky"]["artifactUri"] == "flaky://flaky/2"
    ends = sorted((a["type"], a["target"] or "", a["attempt"], a["end"]) for a in data["activities"])
    assert ends == [
        ("aib-build", "", 1, "completed"),
        ("aib-publish-target", "broken", 3, "completed"),  # its last attempt's outcome is the target's
        ("aib-publish-target", "flaky", 2, "completed"),
        ("aib-publish-target", "steady", 1, "completed"),
    ]
    assert _target_states(data["events"], "flaky") == ["Running", "Failed", "Running", "Succeeded"]
    phases = [e["run_sub_state"] for e in data["events"] if e["kind"] == "phase"]
    assert phases[-1] == "Distributing"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_worker_stopped_while_publishing_hands_the_whole_build_to_another(
    fake_cluster: FakeCluster, sig: signal.Signals
) -> None:
    """``kill -9`` of the worker whose build is publishing, or SIGTERM with a publish longer than its 5 s grace:
    its artifact is gone, so the build runs again on the other worker, which publishes it."""
    names = {fake_cluster.start_worker(n, max_builds=1): n for n in ("w1", "w2")}
    # 15 s: far past the stopping worker's 5 s grace, also when this machine is slow to notice and signal
    proc = fake_cluster.start_publishing([{"type": "FakeTarget", "runOutputName": "slow", "delay": 15}])
    deadline = time.monotonic() + 60
    publishing = None
    while publishing is None:
        assert time.monotonic() < deadline and proc.poll() is None, "the build never reached its target"
        for name in ("w1", "w2"):
            if any("distributing slow" in j.read_text() for j in (fake_cluster.root / name).glob("**/journal.jsonl")):
                publishing = name
        time.sleep(0.1)
    victim = fake_cluster.workers[publishing][0]
    victim.send_signal(sig)
    assert victim.wait(timeout=60) == (0 if sig == signal.SIGTERM else -signal.SIGKILL), fake_cluster.logs()
    if sig == signal.SIGTERM:  # a graceful stop cleans up what it hands back
        runs = fake_cluster.root / publishing / "staging"
        assert list(runs.glob("*/runs/*/run.json")) and not list(runs.glob("*/runs/*/work")), "work files left"
    data = fake_cluster.published(proc)
    assert data["result"]["lastRunStatus"]["runState"] == "Succeeded", data["result"]["lastRunStatus"]
    workers = [names[a["worker"]] for a in data["attempts"]]
    assert workers == [publishing, "w2" if publishing == "w1" else "w1"], data["attempts"]
    builds = [a for a in data["activities"] if a["type"] == "aib-build"]
    assert [(a["attempt"], a["end"]) for a in builds] == [(2, "completed")], data["activities"]
    published = [a for a in data["activities"] if a["type"] == "aib-publish-target" and a["end"] == "completed"]
    assert [a["target"] for a in published] == ["slow"], data["activities"]


def test_cancelling_while_publishing_cancels_the_target_activity(fake_cluster: FakeCluster) -> None:
    """The build activity stops its target activities before it ends ``Canceled``; the worker takes the next
    build."""
    fake_cluster.start_worker("w", max_builds=1)
    slow = {"type": "FakeTarget", "runOutputName": "slow", "delay": 300}
    data = fake_cluster.published(fake_cluster.start_publishing([slow], "cancel"), timeout=90)
    assert data["result"]["lastRunStatus"]["runState"] == "Canceled"
    assert data["result"]["runOutputs"]["slow"]["provisioningState"] == "Canceled"
    assert [(a["type"], a["end"]) for a in data["activities"]] == [("aib-build", "canceled")]
    assert _target_states(data["events"], "slow") == ["Running", "Canceled"]  # stopped on the worker
    assert not list(fake_cluster.root.glob("w/staging/*/runs/*/work")), "work files left behind"
    results = fake_cluster.submit(1, 0.0)  # the worker's slot was given back
    assert results[0]["lastRunStatus"]["runState"] == "Succeeded"


def test_a_finished_runs_events_need_no_worker(fake_cluster: FakeCluster) -> None:
    """Once the build's worker has stopped, the run's events still come, from the workflow history."""
    fake_cluster.start_worker("w", max_builds=1)
    (result,) = fake_cluster.submit(1, 0.0)
    proc, _ = fake_cluster.workers.pop("w")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    cmd = [sys.executable, str(HERE / "queue_scenario.py"), fake_cluster.address, fake_cluster.queue, "events"]
    out = subprocess.run([*cmd, result["runId"]], capture_output=True, text=True, env=fake_cluster.env("s"), timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    kinds = json.loads(out.stdout.strip().splitlines()[-1])
    assert kinds[0] == "run-started" and kinds[-1] == "run-finished" and "target" in kinds, kinds
