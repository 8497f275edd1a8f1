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
    assert {row["runId"] for row in report["runs"]} >= {ok["runId"], canceled["result"]["runId"]}
    handed = report["handed_back"]
    assert handed["result"]["lastRunStatus"]["runState"] == "Succeeded"
    assert [(a["attempt"], a["worker"]) for a in handed["attempts"]] == [(1, "a"), (2, "b")]
