"""The Python API (``TemporalEngine``) against the real dev server, with the fake providers (no VM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).with_name("api_scenario.py")


def test_submit_events_result_and_cancel(temporal_server: str, tmp_path: Path) -> None:
    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tmp_path / "cache"))
    env.pop("AIB_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, str(SCENARIO), temporal_server, f"api-{tmp_path.name}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    ok = report["ok"]
    assert ok["result"]["lastRunStatus"]["runState"] == "Succeeded"
    assert ok["result"]["runId"] == ok["runId"]
    assert ok["result"]["runOutputs"]["out"]["provisioningState"] == "Succeeded"
    assert ok["result"]["source"]["exactVersion"] == "1.2.3"
    assert ok["kinds"][0] == "run-started" and ok["kinds"][-1] == "run-finished"
    assert {"phase", "step-started", "step-finished", "target"} <= set(ok["kinds"])
    canceled = report["canceled"]
    assert canceled["result"]["lastRunStatus"]["runState"] == "Canceled"
    assert canceled["state"]["runState"] == "Canceled"
    states = {row["runId"]: row["runState"] for row in report["runs"]}
    assert states[ok["runId"]] == "Succeeded" and states[canceled["result"]["runId"]] == "Canceled"
    handed = report["handed_back"]
    assert handed["result"]["lastRunStatus"]["runState"] == "Succeeded"
    assert [(a["attempt"], a["worker"]) for a in handed["attempts"]] == [(1, "a"), (2, "b")]


def test_queued_build_warns_without_workers_and_cancels(cluster, tiny_guest_source, tmp_path) -> None:
    """No worker has the provider the build needs: the submitter says so; Ctrl-C and ``aib cancel`` end it
    Canceled while it is queued."""
    import signal
    import time

    cluster.start_worker("no-gallery", extra_env={"AIB_DISABLE_PLUGINS": "aib-provider-local-gallery"})
    gallery = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/tiny"
    template = tmp_path / "queued.json"
    template.write_text(
        json.dumps(
            {
                "source": tiny_guest_source,
                "distribute": [{"type": "SharedImage", "runOutputName": "img", "galleryImageId": gallery}],
            }
        )
    )
    proc = cluster.popen("build", str(template), "--json", "--progress", "plain")
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "no worker serves" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert "waits in Queued" in seen, seen
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert json.loads(stdout)["lastRunStatus"]["runState"] == "Canceled"

    detached = cluster.aib("build", str(template), "--detach")
    assert detached.returncode == 0, detached.stderr
    run_id = detached.stdout.strip()
    assert cluster.aib("cancel", run_id).returncode == 0
    for _ in range(100):
        show = json.loads(cluster.aib("show", run_id).stdout)
        if show["status"] == "CANCELED":
            break
        time.sleep(0.2)
    assert show["status"] == "CANCELED"
    assert cluster.aib("cancel", "20200101T000000Z-000000").returncode == 1  # an unknown run is a usage error


def test_an_input_tampered_with_in_the_store_fails_the_build_on_the_worker(cluster, tiny_template, tmp_path) -> None:
    """The worker checks every input against the digest the submitter sent, before it boots anything."""
    import time

    (tmp_path / "setup.sh").write_text("echo the real script\n")
    template = tiny_template("tampered", [{"type": "Shell", "name": "setup", "scriptUri": "setup.sh"}])
    detached = cluster.aib("build", str(template), "--detach")
    assert detached.returncode == 0, detached.stderr
    run_id = detached.stdout.strip()
    (blob,) = (cluster.store / "sha256").iterdir()
    blob.write_text("echo an evil script\n")
    worker = cluster.start_worker("w1")
    for _ in range(300):
        show = json.loads(cluster.aib("show", run_id).stdout)
        if show["status"] != "RUNNING":
            break
        time.sleep(0.2)
    status = show["result"]["lastRunStatus"]
    assert status["runState"] == "Failed", show
    assert "does not match its digest" in status["message"]
    assert len(show["attempts"]) == 1  # not retried: the store's copy is bad for every worker
    assert worker.runs() == []  # refused before the build started
    worker.proc.terminate()
    worker.proc.wait(timeout=60)
    show = cluster.aib("show", run_id)  # no worker left to answer a query: read from the workflow's history
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["result"]["lastRunStatus"]["runState"] == "Failed"
