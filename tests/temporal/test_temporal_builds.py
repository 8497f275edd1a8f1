"""Builds through a real Temporal dev server and two ``aib worker`` processes, on the tiny guest."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


def qemu_processes(marker: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if str(marker) in line]


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """Read the process's stderr (in a thread) until a line holds ``needle``; return the lines seen."""
    lines: queue.Queue[str] = queue.Queue()
    stderr = proc.stderr
    assert stderr is not None

    def pump() -> None:
        for line in stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(needle in line for line in seen):
        try:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            proc.kill()
            pytest.fail(f"never saw {needle!r}:\n" + "".join(seen[-40:]))
    proc.stderr_lines = lines  # type: ignore[attr-defined]
    return seen


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Wait for a process whose stderr :func:`read_until` drains; return its stdout and the rest of stderr."""
    proc.wait(timeout=timeout)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    time.sleep(0.2)
    return stdout, "".join(proc.stderr_lines.queue)  # type: ignore[attr-defined]


def test_concurrent_builds_spread_over_workers_with_inputs_from_the_submitter(cluster, tiny_template, tmp_path):
    """3 builds at once, 2 workers of 1 build each: all succeed, both workers build, and the script and file the
    templates name by relative path travel through the artifact store and are verified on the worker."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "files").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text('#!/bin/sh\necho "script-saw-$(cat /tmp/data.txt)"\n')
    (tmp_path / "files" / "data.txt").write_text("payload-from-the-submitter")

    def steps(i: int) -> list[dict[str, object]]:  # a first step of its own: no build reuses another's layers
        return [
            {"type": "Shell", "name": "own", "inline": [f"echo build-{i}"]},
            {"type": "File", "name": "data", "sourceUri": "files/data.txt", "destination": "/tmp/data.txt"},
            {"type": "Shell", "name": "setup", "scriptUri": "scripts/setup.sh"},
        ]

    w1 = cluster.start_worker("w1")
    w2 = cluster.start_worker("w2")
    procs = [
        cluster.popen("build", str(tiny_template(f"spread{i}", steps(i))), "--json", "--progress", "plain")
        for i in range(3)
    ]
    # Drain every submitter at once (one at a time, the others' pipes could fill and stall them); stop before
    # pytest's own timeout so a hang shows the workers' logs.
    with ThreadPoolExecutor(len(procs)) as pool:
        futures = [pool.submit(p.communicate, timeout=480) for p in procs]
        try:
            outputs = [f.result() for f in futures]
        except subprocess.TimeoutExpired as exc:
            for p in procs:
                p.kill()
            raise AssertionError(
                "a build did not finish in 480 s\n" + w1.output()[-3000:] + w2.output()[-3000:]
            ) from exc
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-3000:] + w1.output()[-2000:] + w2.output()[-2000:]
        result = json.loads(stdout)
        assert result["lastRunStatus"]["runState"] == "Succeeded"
        assert result["runOutputs"]["vhd"]["provisioningState"] == "Succeeded"
        assert "script-saw-payload-from-the-submitter" in stderr  # live log lines came back
    run_ids = {json.loads(out)["runId"] for out, _ in outputs}
    assert run_ids == set(w1.runs()) | set(w2.runs())
    assert w1.runs() and w2.runs(), (w1.runs(), w2.runs())  # both workers built
    blobs = sorted(p.name for p in (cluster.store / "sha256").iterdir())
    assert len(blobs) == 2  # two distinct files, uploaded once each
    copies = {p.name for p in (cluster.cache / "temporal-inputs").iterdir() if not p.name.startswith(".")}
    assert set(blobs) <= copies  # the workers' verified copies
    assert not qemu_processes(cluster.root)
    listing = cluster.aib("runs", "--json")
    assert listing.returncode == 0, listing.stderr
    assert run_ids <= {row["runId"] for row in json.loads(listing.stdout)}


def test_killed_worker_build_completes_on_the_other_worker(cluster, tiny_template):
    w1 = cluster.start_worker("w1")
    w2 = cluster.start_worker("w2")
    template = tiny_template("survivor", [{"type": "Shell", "name": "slow", "inline": ["echo slow-step", "sleep 15"]}])
    proc = cluster.popen("build", str(template), "--json", "--progress", "plain")
    read_until(proc, "slow-step", 300)
    running = next(w for w in (w1, w2) if w.runs())
    other = w2 if running is w1 else w1
    os.kill(running.proc.pid, signal.SIGKILL)
    running.proc.wait(timeout=30)
    stdout, rest = finish(proc, 600)
    assert proc.returncode == 0, rest[-3000:] + other.output()[-3000:]
    result = json.loads(stdout)
    assert result["lastRunStatus"]["runState"] == "Succeeded"
    assert result["runId"] in other.runs()
    show = cluster.aib("show", result["runId"])
    assert show.returncode == 0, show.stderr
    record = json.loads(show.stdout)
    assert record["status"] == "COMPLETED"
    assert [a["attempt"] for a in record["attempts"]] == [1, 2]
    assert record["attempts"][0]["worker"] != record["attempts"][1]["worker"]


def test_sigterm_lets_a_short_build_finish_and_hands_a_long_one_to_the_other_worker(cluster, tiny_template):
    """Graceful stop: SIGTERM stops polling; a build that ends within ``--grace`` finishes on the stopping worker,
    one that does not is cancelled (VM stopped, work files removed) and completes on the other worker."""
    w1 = cluster.start_worker("w1", grace=2)
    long = tiny_template("long", [{"type": "Shell", "name": "slow", "inline": ["echo slow-step", "sleep 12"]}])
    proc = cluster.popen("build", str(long), "--json", "--progress", "plain")
    read_until(proc, "slow-step", 300)
    w2 = cluster.start_worker("w2", grace=60)  # starts while w1 holds the build: only a hand-back reaches it
    w1.proc.send_signal(signal.SIGTERM)
    assert w1.proc.wait(timeout=90) == 0, w1.output()[-3000:]
    assert not qemu_processes(w1.home), "the stopping worker left its VM running"
    assert not list(w1.home.glob("staging/*/runs/*/work")), "work files left behind"
    stdout, rest = finish(proc, 600)
    assert proc.returncode == 0, rest[-3000:] + w2.output()[-3000:]
    result = json.loads(stdout)
    assert result["lastRunStatus"]["runState"] == "Succeeded"
    record = json.loads(cluster.aib("show", result["runId"]).stdout)
    assert [a["attempt"] for a in record["attempts"]] == [1, 2]
    assert result["runId"] in w1.runs() and result["runId"] in w2.runs()

    short = tiny_template("short", [{"type": "Shell", "name": "brief", "inline": ["echo brief-step", "sleep 3"]}])
    proc = cluster.popen("build", str(short), "--json", "--progress", "plain")
    read_until(proc, "brief-step", 300)
    w2.proc.send_signal(signal.SIGTERM)  # within its 60 s grace: the build finishes here
    stdout, rest = finish(proc, 300)
    assert proc.returncode == 0, rest[-3000:] + w2.output()[-3000:]
    result = json.loads(stdout)
    assert w2.proc.wait(timeout=60) == 0, w2.output()[-3000:]
    record = json.loads(cluster.aib("show", result["runId"]).stdout)
    assert [a["worker"] for a in record["attempts"]] == [record["attempts"][0]["worker"]]  # one attempt only
    assert result["runId"] in w2.runs()
    assert not qemu_processes(cluster.root)
    assert not list(cluster.root.glob("w*/home/staging/*/runs/*/work")), "work files left behind"


def test_ctrl_c_cancels_the_remote_run_and_the_worker_cleans_up(cluster, tiny_template):
    worker = cluster.start_worker("w1")
    template = tiny_template(
        "cancel-me", [{"type": "Shell", "name": "wait", "inline": ["echo step-running", "sleep 300"]}]
    )
    proc = cluster.popen("build", str(template), "--json", "--progress", "plain")
    read_until(proc, "step-running", 300)
    assert qemu_processes(cluster.root)
    proc.send_signal(signal.SIGINT)
    stdout, rest = finish(proc, 180)
    assert proc.returncode == 130, rest[-3000:]
    result = json.loads(stdout)
    assert result["lastRunStatus"]["runState"] == "Canceled"
    show = cluster.aib("show", result["runId"])
    assert json.loads(show.stdout)["status"] == "CANCELED", show.stdout + show.stderr
    assert not qemu_processes(cluster.root)
    assert not list(worker.home.glob("staging/*/runs/*/work")), "work files left behind"
    assert list(worker.home.glob("staging/*/runs/*/run.json"))


def test_worker_without_the_needed_provider_never_takes_the_build(cluster, tiny_guest_source, tmp_path):
    """Builds publishing to the local gallery: the worker without local-gallery stays idle while they queue."""
    able = cluster.start_worker("able")
    unable = cluster.start_worker("unable", extra_env={"AIB_DISABLE_PLUGINS": "aib-provider-local-gallery"})
    assert "local-gallery" not in unable.output().split("queue(s):")[1]
    gallery = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/tiny"
    procs = []
    for i in range(2):
        template = tmp_path / f"gallery{i}.json"
        template.write_text(
            json.dumps(
                {
                    "source": tiny_guest_source,
                    "customize": [{"type": "Shell", "name": "mark", "inline": ["echo hi"]}],
                    "distribute": [{"type": "SharedImage", "runOutputName": "img", "galleryImageId": gallery}],
                }
            )
        )
        procs.append(cluster.popen("build", str(template), "--json", "--create-missing", "--progress", "none"))
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:] + able.output()[-2000:]
        assert json.loads(stdout)["lastRunStatus"]["runState"] == "Succeeded"
    assert len(able.runs()) == 2
    assert unable.runs() == []


def test_twenty_templates_drain_across_two_workers_within_their_caps(cluster, tiny_template, most_at_once):
    """20 tiny-guest templates submitted at once to workers of ``--max-builds`` 2 and 1: all succeed, both workers
    build, and each runs up to its cap at once and never more (from each run's start and end time)."""
    caps = {"a": 2, "b": 1}
    workers = {name: cluster.start_worker(name, max_builds=cap) for name, cap in caps.items()}
    by_identity = {f"aib@{os.uname().nodename}:{w.proc.pid}": name for name, w in workers.items()}
    files = [
        str(tiny_template(f"queue{i}", [{"type": "Shell", "name": "own", "inline": [f"echo q{i}"]}])) for i in range(20)
    ]
    scenario = [sys.executable, str(Path(__file__).with_name("queue_scenario.py")), cluster.address, cluster.queue]
    proc = subprocess.run(
        [*scenario, "files", *files], capture_output=True, text=True, env=cluster.env("s"), timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + "".join(w.output()[-2000:] for w in workers.values())
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 20
    failed = [r["lastRunStatus"] for r in results if r["lastRunStatus"]["runState"] != "Succeeded"]
    assert not failed, json.dumps(failed)[-3000:] + "".join(w.output()[-3000:] for w in workers.values())
    most = {by_identity[worker]: n for worker, n in most_at_once(results).items()}
    assert most == caps  # both took builds, each ran up to its cap at once and never more
    assert not qemu_processes(cluster.root)
