from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vm


def test_one_remote_build(cluster, tiny_template) -> None:
    cluster.start_worker("w1")
    template = tiny_template("one")
    proc = cluster.aib("build", str(template), "--json", "--progress", "plain")
    assert proc.returncode == 0, proc.stderr[-4000:] + cluster.workers[0].output()[-4000:]
    result = json.loads(proc.stdout)
    assert result["lastRunStatus"]["runState"] == "Succeeded"
    print(proc.stderr[-3000:])
