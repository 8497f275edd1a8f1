"""The fault matrix on a real ``aib build`` of the tiny guest: for each VM phase (boot, step, reboot, capture) the
build is (a) cancelled (SIGINT), (b) killed with ``kill -9`` and then collected by ``aib gc``, (c) hit by the
phase's fault. After each: no QEMU process, no work directory, no open journal entry, no file a journal entry
names, and the run's final state and message name the phase. See docs/reliability.md.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_provider_qemu import process
from aib_sdk.journal import JOURNAL_NAME, read_journal
from aib_sdk.testing.crash import BuildProcess, aib, leftovers, qemu_processes, wait_until

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]

NOISE = "sudo dd if=/dev/urandom of=/noise bs=65536 count=256"  # 16 MiB the capture must copy (and cannot fit)


@dataclass(frozen=True)
class Phase:
    steps: list[dict[str, Any]]
    marker: str  # a stderr line of ``aib build --progress plain`` that means: the phase is under way
    where: str  # how the run's message names the phase (cancel and kill -9)


PHASES = {
    "boot": Phase([], "    qemu: booting", "Building (starting the build VM on qemu)"),
    "step": Phase(
        [{"type": "Shell", "name": "wait", "inline": ["echo step-running", "sleep 300"]}],
        "step-running",
        "Customizing (customize step 'wait')",
    ),
    "reboot": Phase(
        [{"type": "Shell", "name": "reboot", "inline": ["sudo reboot", "sleep 60"]}],
        "waiting for it to come back",
        "Customizing (customize step 'reboot')",
    ),
    "capture": Phase(
        [{"type": "Shell", "name": "noise", "inline": [NOISE]}],
        "capture OS disk",
        "Customizing (capturing the disk)",
    ),
}
FAULTS = {
    "boot": "Building failed (starting the build VM on qemu): QEMU exited while the guest was booting",
    "step": "step 'wait' failed: the guest did not come back after a restart: the build VM stopped",
    "reboot": "step 'reboot' failed: the guest did not come back after a restart: the build VM stopped",
    "capture": "Customizing failed (capturing the disk)",
}


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    """``AIB_HOME`` on a 48 MiB tmpfs: room for the overlay, not for the capture as well (ENOSPC)."""
    home = tmp_path / "small-home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(home)], check=True)
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def run_directory(tmp_path: Path, cache: Path, home: Path | None) -> Path:
    runs = json.loads(aib(tmp_path, cache, "runs", "--json", home=home).stdout)
    assert len(runs) == 1, runs
    return Path(runs[0]["runDirectory"])


def qmp_socket(run_dir: Path) -> Path:
    state = read_journal(run_dir / JOURNAL_NAME)
    [sockets] = [e.data["path"] for e in state.open_entries if e.what == "QMP socket directory"]
    return Path(sockets) / "qmp.sock"


def qmp_answers(run_dir: Path) -> bool:
    """QEMU has started: its QMP socket is in the journal and answers."""
    try:
        socket = qmp_socket(run_dir)
    except (OSError, ValueError):
        return False
    return anyio.run(process.qmp_command, socket, "query-status")


def inject(phase: str, tmp_path: Path, run_dir: Path) -> None:
    """The phase's fault: QEMU is killed while booting; the VM crashes for good (QMP ``quit``) mid-step or while
    rebooting; the capture's fault (a full disk) needs no action: AIB_HOME is a small tmpfs."""
    if phase == "boot":
        # once QEMU answers on QMP the builder sees it started (it polls every 50 ms): the kill lands in the boot
        wait_until(lambda: qmp_answers(run_dir), timeout=60)
        time.sleep(1)
        for line in qemu_processes(tmp_path):
            process.send(int(line.split()[0]), signal.SIGKILL)
    elif phase in ("step", "reboot"):
        assert anyio.run(process.qmp_command, qmp_socket(run_dir), "quit")


@pytest.mark.parametrize("mode", ["cancel", "kill9", "fault"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_vm_cell(
    phase: str,
    mode: str,
    tmp_path: Path,
    tiny_guest_source: dict[str, str],
    tiny_guest_cache: Path,
    start_build: Callable[..., BuildProcess],
    request: pytest.FixtureRequest,
) -> None:
    spec = PHASES[phase]
    home = request.getfixturevalue("small_home") if (phase, mode) == ("capture", "fault") else None
    template = {
        "source": tiny_guest_source,
        "customize": spec.steps,
        "distribute": [{"type": "VHD", "runOutputName": "vhd"}],
    }
    build = start_build(template, home=home)
    build.wait_for(spec.marker)
    if mode == "cancel":
        build.proc.send_signal(signal.SIGINT)
        assert build.proc.wait(timeout=120) == 130, build.stderr()[-3000:]
        expected = f"the build was canceled during {spec.where}"
        state = "Canceled"
    elif mode == "kill9":
        build.proc.send_signal(signal.SIGKILL)
        build.proc.wait(timeout=30)
        wait_until(lambda: not qemu_processes(tmp_path), timeout=15)
        gc = aib(tmp_path, tiny_guest_cache, "gc", home=home)
        assert gc.returncode == 0, gc.stdout + gc.stderr
        # the journal knows the phase and its step (or capture), not the provider's own activity
        expected = f"the build was interrupted during {spec.where.removesuffix(' (starting the build VM on qemu)')}"
        state = "Failed"
    else:
        inject(phase, tmp_path, run_directory(tmp_path, tiny_guest_cache, home))
        assert build.proc.wait(timeout=180) == 2, build.stderr()[-3000:]
        expected, state = FAULTS[phase], "Failed"
    run_dir = run_directory(tmp_path, tiny_guest_cache, home)
    status = json.loads((run_dir / "run.json").read_text())["lastRunStatus"]
    assert status["runState"] == state and expected in status["message"], status
    assert not qemu_processes(tmp_path)
    assert leftovers(run_dir) == []
