"""``aib build`` as a real subprocess: the tiny test guest under QEMU, file outputs, and Ctrl-C during a build."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from aib_sdk.testing.fixtures_vm import read_ext4_file

AIB = Path(sys.executable).parent / "aib"
MIB = 1024 * 1024
pytestmark = pytest.mark.vm


def environment(tmp_path: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(cache), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    env.pop("AIB_CONFIG", None)
    return env


def qemu_processes(marker: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if str(marker) in line]


def test_build_tiny_guest_to_files(tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path) -> None:
    out_qcow2 = tmp_path / "out" / "tiny.qcow2"
    template = tmp_path / "tiny.json"
    template.write_text(
        json.dumps(
            {
                "source": tiny_guest_source,
                "customize": [{"type": "Shell", "name": "mark", "inline": ["echo <word> | sudo tee /etc/cli-mark"]}],
                "distribute": [
                    {"type": "DiskFile", "runOutputName": "disk", "uri": out_qcow2.as_uri(), "compression": "zstd"},
                    {"type": "VHD", "runOutputName": "vhd"},
                ],
            }
        )
    )
    started = time.monotonic()
    proc = subprocess.run(
        [str(AIB), "build", str(template), "--param", "word=from-the-cli", "--json", "--timeout", "5m"],
        capture_output=True,
        text=True,
        env=environment(tmp_path, tiny_guest_cache),
        timeout=400,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["lastRunStatus"]["runState"] == "Succeeded"
    assert result["runOutputs"]["disk"]["artifactUri"] == out_qcow2.as_uri()
    vhd = Path(result["runOutputs"]["vhd"]["artifactUri"].removeprefix("file://"))
    assert vhd.stat().st_size % MIB == 512
    assert vhd.read_bytes()[-512:][:8] == b"conectix"
    # The step's change is in both outputs.
    content = anyio.run(read_ext4_file, out_qcow2, "qcow2", "/etc/cli-mark", tmp_path)
    assert content == b"from-the-cli\n"
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "qcow2", "-F", "vpc", str(out_qcow2), str(vhd)], capture_output=True, check=False
    )
    assert compare.returncode == 0, compare.stdout
    assert not qemu_processes(tmp_path)
    print(f"aib build (tiny guest, 2 file targets) took {elapsed:.1f}s")


def test_ctrl_c_cancels_a_real_build(tmp_path: Path, tiny_guest_source, tiny_guest_cache: Path) -> None:
    template = tmp_path / "slow.json"
    template.write_text(
        json.dumps(
            {
                "source": tiny_guest_source,
                "customize": [{"type": "Shell", "name": "wait", "inline": ["echo step-running", "sleep 300"]}],
                "distribute": [{"type": "VHD", "runOutputName": "vhd"}],
            }
        )
    )
    proc = subprocess.Popen(
        [str(AIB), "build", str(template), "--json", "--progress", "plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(tmp_path, tiny_guest_cache),
    )
    stderr = proc.stderr
    assert stderr is not None
    lines: queue.Queue[str] = queue.Queue()

    def read_stderr() -> None:
        for line in stderr:
            lines.put(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + 240
    while not any("step-running" in line for line in seen):
        try:
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            proc.kill()
            pytest.fail("the step never started:\n" + "".join(seen[-40:]))
        if proc.poll() is not None and lines.empty():
            pytest.fail(f"aib exited with {proc.returncode} before the step ran:\n" + "".join(seen[-40:]))
    assert qemu_processes(tmp_path)  # the build VM is up
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)  # stdout holds one small JSON object: no pipe can fill up
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    err = "".join(seen)
    assert proc.returncode == 130, err[-3000:]
    assert "cancelling the build" in err and "Traceback" not in err
    assert json.loads(stdout)["lastRunStatus"]["runState"] == "Canceled"
    assert not qemu_processes(tmp_path)  # cleanup stopped the VM
