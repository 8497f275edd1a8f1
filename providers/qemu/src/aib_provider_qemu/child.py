"""QEMU as a child of the builder that never outlives it (unless the VM is kept on purpose).

QEMU runs in the foreground (no ``-daemonize``) as a direct child of the builder, in a session of its own so a
terminal's Ctrl-C reaches only the builder (which then cancels cleanly). Next to it runs a tiny *watchdog*
(``sh``) whose stdin is a pipe held only by the builder process: when the builder ends in any way — even
``SIGKILL`` — the kernel closes the pipe, ``read`` sees end-of-file and the watchdog ``SIGKILL``\\ s every process
whose command line carries the VM's unique ``-name`` tag. ``keep()`` (``errorHandling: abort``) disarms it by
writing one line first, so a kept VM survives the builder.

Why not ``PR_SET_PDEATHSIG``: the death signal cannot be cleared from outside the child, so a kept VM would die
with the builder; and it fires when the *thread* that forked exits, not the process, so spawning from a worker
thread (``anyio.to_thread``) kills QEMU as soon as that thread is retired. The pipe watchdog has neither
problem and needs no ``preexec_fn`` (which is unsafe with threads). Measured here: QEMU is gone ~10 ms after
``kill -9`` of the builder (``tests``: ``test_kill_9_of_aib_build_kills_its_qemu``).

:func:`spawn` is synchronous on purpose: the pid is known before the caller's next ``await``, so a cancellation
can never orphan a QEMU that is still starting. It forks twice (the watchdog, then QEMU), as
``asyncio.create_subprocess_exec`` would on the event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from aib_provider_qemu import process

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.options import BuildOptions

TAG_ENV = "AIB_VM_TAG"
WATCHDOG_SCRIPT = f'read -r word; [ -n "$word" ] || exec pkill -KILL -f -- "${TAG_ENV}"'
"""Any line on stdin disarms the watchdog; end-of-file (the builder is gone, or released it) kills the tag."""


@dataclass
class QemuChild:
    """One QEMU process and its watchdog; ``tag`` is QEMU's unique ``-name`` (what the watchdog and gc match)."""

    process: subprocess.Popen[bytes]
    watchdog: subprocess.Popen[bytes]
    tag: str
    stderr_file: Path
    _arm_fd: int | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> bool:
        """Whether QEMU has ended (reaps it)."""
        return self.process.poll() is not None

    def stderr_text(self) -> str:
        try:
            return self.stderr_file.read_text(errors="replace").strip()
        except OSError:
            return ""

    def disarm(self) -> None:
        """Let QEMU outlive the builder (a kept VM): tell the watchdog to leave."""
        fd, self._arm_fd = self._arm_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, b"keep\n")
            os.close(fd)

    def release(self) -> None:
        """Close the watchdog's pipe: it kills whatever still carries the tag (nothing, after a clean stop)."""
        fd, self._arm_fd = self._arm_fd, None
        if fd is not None:
            os.close(fd)

    async def reap(self, timeout: float = 5.0) -> None:
        """Collect the exit status of QEMU (unless it runs on, kept) and of the watchdog, without blocking."""
        deadline = time.monotonic() + timeout
        while self.watchdog.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a child to poll
            await anyio.sleep(0.02)
        self.process.poll()


def spawn(args: list[str], *, tag: str, cwd: Path, stderr_file: Path) -> QemuChild:
    """Start QEMU (``args``, whose ``-name`` is ``tag``) guarded by its watchdog; see the module docstring."""
    read_fd, arm_fd = os.pipe()  # both close-on-exec: no other child inherits the arming end
    try:
        watchdog = subprocess.Popen(
            ["sh", "-c", WATCHDOG_SCRIPT],
            stdin=read_fd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), TAG_ENV: tag},
            start_new_session=True,
        )
    except BaseException:
        os.close(arm_fd)
        raise
    finally:
        os.close(read_fd)
    try:
        with open(stderr_file, "wb") as stderr:
            qemu = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=cwd,
                start_new_session=True,
            )
    except BaseException:
        os.close(arm_fd)
        raise
    return QemuChild(qemu, watchdog, tag, stderr_file, arm_fd)


async def wait_started(child: QemuChild, qmp_socket: Path, timeout: float = 60.0) -> bool:
    """Wait until QEMU answers on QMP (it has set up every device and runs); False when it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.exited():
            return False
        if await anyio.Path(qmp_socket).exists() and await process.qmp_command(qmp_socket, "query-status", 5):
            return True
        await anyio.sleep(0.05)
    return not child.exited()


def tagged_pids(tag: str) -> list[int]:
    """The running processes whose command line has ``-name <tag>`` (QEMUs of one VM), for gc."""
    needle = f"\0-name\0{tag}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = b"\0" + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and process.alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def release_vm(data: dict[str, Any], config: Config, options: BuildOptions) -> str:
    """Releaser of kind ``qemu.vm`` (for ``aib gc``): kill every QEMU still carrying the VM's tag."""
    tag = str(data["tag"])
    pids = await anyio.to_thread.run_sync(tagged_pids, tag)
    for pid in pids:
        process.send(pid, signal.SIGKILL)
    for pid in pids:
        await process.wait_exit(pid, 10)
    return f"killed QEMU {tag} (pid {', '.join(map(str, pids))})" if pids else f"QEMU {tag} was not running"
