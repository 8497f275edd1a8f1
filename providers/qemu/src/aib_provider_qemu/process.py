"""Watching and stopping QEMU by its pid (a child of the builder guarded by a watchdog: see :mod:`.child`)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import anyio


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()
    return bool(state) and state[0] not in ("Z", "X")


async def wait_exit(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; return whether it did."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(0.05)
    return True


def send(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid`` if it still runs."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


async def qmp_command(socket: Path, command: str, timeout: float = 5.0) -> bool:
    """Run one QMP command (``system_powerdown``, ``quit`` …) over QEMU's unix socket; False if it failed."""
    from qemu.qmp import QMPClient

    client = QMPClient("aib-sdk")
    try:
        with anyio.fail_after(timeout):
            await client.connect(str(socket))
            try:
                await client.execute(command)
            except Exception:
                # ``quit`` may drop the connection before the reply arrives.
                return command == "quit"
        return True
    except Exception:
        return False
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2), contextlib.suppress(Exception):
            await client.disconnect()  # best effort: QEMU may have closed the socket
