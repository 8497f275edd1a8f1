"""Disk layers of a running build VM for the step cache (see :class:`aib_sdk.protocols.LayeredMachine`).

After a step, the guest flushes its buffers (``sync``), then QMP ``blockdev-snapshot-sync`` freezes the VM's current
qcow2 overlay and continues on a fresh one backed by it — no shutdown, no reboot. The frozen overlay holds exactly
the writes since the previous snapshot (or boot): it is copied into the layer store and its backing file rewritten
(``qemu-img rebase -u``, header only) to the parent layer's path. The layer is consistent like a disk after a power
cut that followed ``sync``: what the step wrote is on it, and journaling filesystems replay the rest.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import time
from collections.abc import Callable
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
    to ``state`` (:func:`migrate_to_file`). The VM stays stopped (``cont`` resumes it)."""
    await qmp_execute(qmp_socket, "stop", {})
    await freeze_overlay(qmp_socket, device, new_overlay)
    await migrate_to_file(qmp_socket, state)


async def migrate_to_file(qmp_socket: Path, state: Path, timeout: float = 600.0) -> None:
    """Write the (stopped) VM's RAM and device state to ``state`` (created 0600 or truncated): QEMU gets the open
    file over QMP (``getfd``, ``migrate fd:``) and writes it itself, so once the migration reports ``completed``
    every byte is in the file. QEMU refuses devices it cannot migrate (7.2: NVMe)."""
    from qemu.qmp import QMPClient

    client = QMPClient("aib-sdk-ram-state")
    fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with anyio.fail_after(timeout):
            await client.connect(str(qmp_socket))
            client.send_fd_scm(fd)
            await client.execute("getfd", {"fdname": "aib-ram-state"})
            await client.execute("migrate", {"uri": "fd:aib-ram-state"})
            while True:
                info = await client.execute("query-migrate", {})
                status = info.get("status") if isinstance(info, dict) else None
                if status == "completed":
                    return
                if status in ("failed", "cancelled"):
                    detail = info.get("error-desc", "") if isinstance(info, dict) else ""
                    raise BuildHostError(f"saving the VM's RAM state ended {status} {detail}".strip())
                await anyio.sleep(0.05)
    except BuildHostError:
        raise
    except Exception as exc:
        raise BuildHostError(f"saving the VM's RAM state failed: {exc}") from exc
    finally:
        os.close(fd)
        with anyio.CancelScope(shield=True), anyio.move_on_after(2), contextlib.suppress(Exception):
            await client.disconnect()


def incoming_args(state: Path) -> list[str]:
    """QEMU arguments to start from a saved state instead of booting (the VM waits, stopped, until ``cont``)."""
    return ["-incoming", f"exec:cat {shlex.quote(str(state))}"]


async def resume_incoming(qmp_socket: Path, alive: Callable[[], bool] | None = None, timeout: float = 300.0) -> None:
    """A QEMU started with :func:`incoming_args`: wait until the state is loaded, then ``cont``. Raise
    :class:`BuildHostError` when QEMU exits (a damaged or foreign state) or the load takes over ``timeout``."""
    with anyio.move_on_after(timeout):
        while True:
            if alive is not None and not alive():
                raise BuildHostError("QEMU exited while loading the saved state (damaged, or from another VM)")
            try:
                status = (await qmp_execute(qmp_socket, "query-status", {}, timeout=5)).get("status")
            except BuildHostError:
                await anyio.sleep(0.05)
                continue
            if status == "inmigrate":
                await anyio.sleep(0.05)
                continue
            if status not in ("paused", "postmigrate", "prelaunch", "running"):
                raise BuildHostError(f"the saved state did not load (QEMU status {status})")
            if status != "running":
                await qmp_execute(qmp_socket, "cont", {})
            return
    raise BuildHostError(f"loading the saved state took longer than {timeout:.0f}s")


async def settle_restored(comm: Communicator, boot_id: str) -> None:
    """On a resumed Linux guest: set its clock (behind by the state's age) to the host's and check that it is the
    saved boot (``boot_id``); raise :class:`BuildHostError` otherwise."""
    result = await comm.run(
        f"sudo date -u -s @{int(time.time())} >/dev/null && cat /proc/sys/kernel/random/boot_id", timeout=60
    )
    if not result.ok:
        raise BuildHostError(f"setting the resumed guest's clock failed (exit code {result.exit_code})")
    if result.stdout.strip() != boot_id:
        raise BuildHostError("the resumed guest is not the saved boot (its boot id differs)")


async def set_guest_clock(comm: Communicator) -> float:
    """Set a restored Linux guest's clock (behind by the state's age) to the host's; return the lag left (s)."""
    result = await comm.run(f"sudo date -u -s @{int(time.time())} >/dev/null && date +%s", timeout=60)
    if not result.ok:
        raise BuildHostError(f"setting the restored guest's clock failed (exit code {result.exit_code})")
    return time.time() - float(result.stdout.split()[-1])
