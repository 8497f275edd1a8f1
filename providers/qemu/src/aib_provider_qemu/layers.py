"""Disk layers of a running build VM for the step cache (see :class:`aib_sdk.protocols.LayeredMachine`).

After a step, the guest flushes its buffers (``sync``), then QMP ``blockdev-snapshot-sync`` freezes the VM's current
qcow2 overlay and continues on a fresh one backed by it — no shutdown, no reboot. The frozen overlay holds exactly
the writes since the previous snapshot (or boot): it is copied into the layer store and its backing file rewritten
(``qemu-img rebase -u``, header only) to the parent layer's path. The layer is consistent like a disk after a power
cut that followed ``sync``: what the step wrote is on it, and journaling filesystems replay the rest.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

import anyio

from aib_sdk.errors import BuildHostError
from aib_sdk.protocols import Communicator

LINUX_SYNC = "sync"
WINDOWS_SYNC = 'powershell -NoProfile -Command "Write-VolumeCache -DriveLetter C"'


async def qmp_execute(socket: Path, command: str, arguments: dict[str, Any], timeout: float = 60.0) -> Any:
    """Run one QMP command with arguments; raise :class:`BuildHostError` with QEMU's message if it fails."""
    from qemu.qmp import QMPClient

    client = QMPClient("aib-sdk-layers")
    try:
        with anyio.fail_after(timeout):
            await client.connect(str(socket))
            return await client.execute(command, arguments)
    except Exception as exc:
        raise BuildHostError(f"QMP {command} failed: {exc}") from exc
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2), contextlib.suppress(Exception):
            await client.disconnect()


async def freeze_overlay(qmp_socket: Path, device: str, new_overlay: Path) -> None:
    """Make the drive's current image read-only and continue on ``new_overlay`` (created by QEMU, backed by it)."""
    await qmp_execute(
        qmp_socket,
        "blockdev-snapshot-sync",
        {"device": device, "snapshot-file": str(new_overlay), "format": "qcow2", "mode": "absolute-paths"},
    )


async def write_layer(frozen: Path, dest: Path, backing: Path, backing_format: str) -> None:
    """Copy the frozen overlay into ``dest`` (in place) and point its backing file at ``backing``."""

    def copy() -> None:
        with open(frozen, "rb") as src, open(dest, "r+b") as dst:
            dst.truncate(0)
            shutil.copyfileobj(src, dst, 4 << 20)

    await anyio.to_thread.run_sync(copy)
    result = await anyio.run_process(
        ["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(backing), "-F", backing_format, str(dest)],
        check=False,
    )
    if result.returncode != 0:
        raise BuildHostError(f"qemu-img rebase of a layer failed: {result.stderr.decode(errors='replace').strip()}")


async def save_ram_state(qmp_socket: Path, device: str, new_overlay: Path, state: Path) -> None:
    """Stop the CPUs, freeze the drive's overlay (the disk now matches RAM exactly) and write RAM and device state
    to ``state`` (QMP ``migrate`` to a file). The VM stays stopped (``cont`` resumes it). QEMU refuses devices it
    cannot migrate (7.2: NVMe)."""
    await qmp_execute(qmp_socket, "stop", {})
    await freeze_overlay(qmp_socket, device, new_overlay)
    await qmp_execute(qmp_socket, "migrate", {"uri": f"exec:cat > {shlex.quote(str(state))}"})
    while True:
        status = (await qmp_execute(qmp_socket, "query-migrate", {})).get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise BuildHostError(f"saving the VM's RAM state ended {status}")
        await anyio.sleep(0.05)


async def resume_incoming(qmp_socket: Path) -> None:
    """A QEMU started with ``-incoming`` from a saved state: wait until it is loaded, then ``cont``."""
    while True:
        try:
            status = (await qmp_execute(qmp_socket, "query-status", {}, timeout=5)).get("status")
        except BuildHostError:
            await anyio.sleep(0.05)
            continue
        if status != "inmigrate":
            break
        await anyio.sleep(0.05)
    await qmp_execute(qmp_socket, "cont", {})


async def set_guest_clock(comm: Communicator) -> float:
    """Set a restored Linux guest's clock (behind by the state's age) to the host's; return the lag left (s)."""
    result = await comm.run(f"sudo date -u -s @{int(time.time())} >/dev/null && date +%s", timeout=60)
    if not result.ok:
        raise BuildHostError(f"setting the restored guest's clock failed (exit code {result.exit_code})")
    return time.time() - float(result.stdout.split()[-1])
