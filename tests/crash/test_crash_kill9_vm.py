"""``kill -9`` of a real ``aib build`` mid-step: its QEMU is gone within seconds (the watchdog), ``aib gc``
releases what the run journaled, and ``aib runs`` shows it ``Running`` while alive, ``Failed`` after."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aib_sdk.journal import JOURNAL_NAME, read_journal
from aib_sdk.testing.crash import BuildProcess, aib, qemu_processes, wait_until

pytestmark = pytest.mark.vm


def test_kill_9_of_aib_build_kills_its_qemu_and_gc_leaves_nothing(
    tmp_path: Path,
    tiny_guest_source: dict[str, str],
    tiny_guest_cache: Path,
    start_build: Callable[..., BuildProcess],
) -> None:
    template: dict[str, Any] = {
        "source": tiny_guest_source,
        "customize": [{"type": "Shell", "name": "wait", "inline": ["echo step-running", "sleep 300"]}],
        "distribute": [{"type": "VHD", "runOutputName": "vhd"}],
    }
    build = start_build(template)
    build.wait_for("step-running")
    assert qemu_processes(tmp_path)
    runs = json.loads(aib(tmp_path, tiny_guest_cache, "runs", "--json").stdout)
    assert [r["runState"] for r in runs] == ["Running"]
    run_dir = Path(runs[0]["runDirectory"])
    journal = read_journal(run_dir / JOURNAL_NAME)
    sockets = [Path(e.data["path"]) for e in journal.open_entries if e.what == "QMP socket directory"]
    assert sockets and sockets[0].is_dir()
    assert (run_dir / "work").is_dir()

    killed = time.monotonic()
    build.proc.send_signal(signal.SIGKILL)
    build.proc.wait(timeout=30)
    gone = wait_until(lambda: not qemu_processes(tmp_path), timeout=15)
    print(f"QEMU gone {gone * 1000:.0f} ms after kill -9 of aib build ({time.monotonic() - killed:.2f}s)")

    dry = aib(tmp_path, tiny_guest_cache, "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would release qemu.vm" in dry.stdout and "would mark the run Failed" in dry.stdout
    assert sockets[0].is_dir() and (run_dir / "work").is_dir()  # a dry run touches nothing

    gc = aib(tmp_path, tiny_guest_cache, "gc")
    assert gc.returncode == 0, gc.stderr
    assert f"removed {sockets[0]}" in gc.stdout and "marked the run Failed" in gc.stdout
    assert not sockets[0].exists() and not (run_dir / "work").exists()
    assert not read_journal(run_dir / JOURNAL_NAME).open_entries
    runs = json.loads(aib(tmp_path, tiny_guest_cache, "runs", "--json").stdout)
    assert runs[0]["runState"] == "Failed" and runs[0]["endTime"]
    record = json.loads((run_dir / "run.json").read_text())
    message = record["lastRunStatus"]["message"]
    assert "interrupted during Customizing (customize step 'wait')" in message
    again = aib(tmp_path, tiny_guest_cache, "gc")
    assert again.returncode == 0 and not again.stdout and "nothing to collect" in again.stderr


def test_a_kept_vm_outlives_aib_build_and_gc_leaves_it_running(
    tmp_path: Path, tiny_guest_source: dict[str, str], tiny_guest_cache: Path
) -> None:
    """errorHandling abort keeps the VM: the watchdog is disarmed, so it survives the builder's exit and aib gc."""
    template = tmp_path / "kept.json"
    template.write_text(
        json.dumps(
            {
                "source": tiny_guest_source,
                "customize": [{"type": "Shell", "name": "broken", "inline": ["exit 3"]}],
                "errorHandling": {"onCustomizerError": "abort"},
                "distribute": [{"type": "VHD", "runOutputName": "vhd"}],
            }
        )
    )
    build = aib(tmp_path, tiny_guest_cache, "build", str(template), "--json", timeout=300)
    assert build.returncode == 2, build.stderr[-2000:]
    assert "kept" in json.loads(build.stdout)["lastRunStatus"]["message"]
    [line] = qemu_processes(tmp_path)
    pid = int(line.split()[0])
    try:
        time.sleep(1)  # the watchdog would have acted by now
        assert qemu_processes(tmp_path), "the kept VM died with its builder"
        gc = aib(tmp_path, tiny_guest_cache, "gc")
        assert gc.returncode == 0, gc.stderr
        assert "ended Failed, leftovers remain" in gc.stdout
        assert (
            "left running (kept on purpose): QEMU build VM aib-vm-" in gc.stdout
            and f"(kept QEMU pid {pid})" in gc.stdout
        )
        assert qemu_processes(tmp_path), "aib gc killed a kept VM"
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not qemu_processes(tmp_path), timeout=15)
