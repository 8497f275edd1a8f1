"""One running build VM: QEMU (a child of the builder) over a qcow2 overlay, serial console, QMP socket, SSH/WinRM."""

from __future__ import annotations

import codecs
import dataclasses
import importlib
import os
import shlex
import shutil
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import anyio
import anyio.abc
import anyio.to_thread

from aib_provider_qemu import layers, process, ramstate, windows
from aib_provider_qemu.settings import QemuSettings
from aib_sdk import disks
from aib_sdk.artifacts import Artifact, DiskImage, StateRequest
from aib_sdk.communicators.lines import LineBuffer
from aib_sdk.communicators.ssh import ANSWER_WAIT, HostKeyMismatch, SshCommunicator
from aib_sdk.context import RunContext
from aib_sdk.errors import BuildHostError, CommunicatorError
from aib_sdk.events import LogLine
from aib_sdk.runtime import cleanup_scope

if TYPE_CHECKING:  # the WinRM stack loads for Windows guests only
    from aib_sdk.communicators.winrm import WinRMCommunicator

SERIAL_TAIL = 40
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
DEFAULT_POWEROFF = "sync; sudo poweroff"
"""Flush the guest's disks first (no root needed), then the image's own clean power-off."""


@dataclass
class QemuMachine:
    """A build VM. Created and destroyed by :meth:`QemuBuildHost.start`; implements ``Machine``."""

    image: DiskImage
    ctx: RunContext
    settings: QemuSettings
    directory: Path
    socket_dir: Path
    overlay: Path
    communicator: SshCommunicator | WinRMCommunicator
    client_key_file: Path | None = None
    known_hosts_file: Path | None = None
    pid: int | None = None
    port: int = 0
    serial_tail: deque[str] = field(default_factory=lambda: deque(maxlen=SERIAL_TAIL))
    ready: anyio.Event = field(default_factory=anyio.Event)
    stopped: bool = False
    kept: bool = False
    winrm: windows.WinRMAccess | None = None
    """Windows guests: the WinRM credentials (the password is never logged; ``keep()`` stores it 0600)."""
    data_disks: int = 0
    snapshots: int = 0
    snapshot_refusal: str = ""
    shape: str = ""
    """The VM's shape digest (:mod:`aib_provider_qemu.ramstate`) when it can save its RAM state, else empty."""
    boot_id: str = ""
    """The guest's boot id when its RAM state was first saved (or resumed): a later one means it rebooted."""
    resumed_state: bool = False
    """This machine resumed a saved RAM state instead of booting (the step cache reports it)."""
    boot_seconds: float = 0.0
    """How long the guest took from starting QEMU to answering (0 when it resumed a saved state)."""
    save_seconds: float = 0.0
    """How long the last RAM state save took."""
    layer_format: ClassVar[str] = "qcow2"

    @property
    def saves_state(self) -> bool:
        """Whether :meth:`snapshot` can keep the RAM state with a layer (``state=``)."""
        return bool(self.shape)

    def can_save_state(self, plan: dict[str, object]) -> bool:
        """A Linux guest reached over SSH with a seed this build made, on one OS disk that QEMU can migrate (no
        data disks, no UEFI variables file, no NVMe: QEMU 7.2 refuses to migrate it)."""
        return (
            isinstance(self.communicator, SshCommunicator)
            and self.image.os_type == "Linux"
            and self.image.access == "cloud-init"
            and self.image.disk_interface != "nvme"
            and self.client_key_file is not None
            and plan.get("seed_iso") is not None
            and not plan.get("data_disks")
            and plan.get("ovmf_vars") is None
        )

    @property
    def qmp_socket(self) -> Path:
        return self.socket_dir / "qmp.sock"

    @property
    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    def alive(self) -> bool:
        return self.pid is not None and process.alive(self.pid)

    def tail_text(self) -> str:
        lines = list(self.serial_tail)
        return ("\nserial console (last lines):\n" + "\n".join(f"  {line}" for line in lines)) if lines else ""

    # Serial console -----------------------------------------------------------------------------------------

    async def follow_serial(self) -> None:
        """Forward each serial console line to the event stream until cancelled."""
        ready_line = self.image.attributes.get("ready_line")
        path = anyio.Path(self.serial_log)
        while not await path.exists():  # noqa: ASYNC110 - QEMU creates the file; there is nothing to wait on
            await anyio.sleep(0.05)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        splitter = LineBuffer()  # linear time, bounded memory whatever the guest prints
        async with await anyio.open_file(self.serial_log, "rb") as f:
            while True:
                chunk = await f.read(65536)
                if not chunk:
                    await anyio.sleep(0.1)
                    continue
                for line in splitter.feed(decoder.decode(chunk)):
                    self.serial_tail.append(line)
                    self.ctx.emit(LogLine(source="serial", stream="serial", line=line))
                    if ready_line and ready_line in line:
                        self.ready.set()

    # Readiness ----------------------------------------------------------------------------------------------

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the readiness line (if the image prints one) and a working SSH login (or WinRM command)."""
        if not isinstance(self.communicator, SshCommunicator):  # WinRM (a Windows guest)
            await self._wait_winrm(self.communicator, timeout)
            return
        # Load the SSH stack in a worker thread while the guest boots (it is not needed before).
        await anyio.to_thread.run_sync(importlib.import_module, "asyncssh")
        with anyio.move_on_after(timeout):
            if self.image.attributes.get("ready_line"):
                while not self.ready.is_set():
                    self._check_running()
                    with anyio.move_on_after(0.25):
                        await self.ready.wait()
            attempt = 0
            while True:
                self._check_running()
                # Cheap banner probes every 0.1 s until sshd answers, then a real login (the handshake may be
                # slow under TCG): no connection attempt hangs on a port the guest does not serve yet. An image
                # that printed its ready line serves SSH already: log in at once (no probe load on its sshd).
                if not self.ready.is_set() and not await self.communicator.wait_answering(ANSWER_WAIT):
                    continue
                attempt += 1
                try:
                    await self.communicator.connect(timeout=min(5.0 + 2.0 * attempt, 20.0))
                    return
                except HostKeyMismatch as exc:
                    hint = ""
                    if self.image.access == "cloud-init":
                        hint = (
                            ". The guest did not take the cloud-init seed that gives it this build's host key: "
                            'if the image reads no seed, set "access": "static" on its DiskImage source and give '
                            "the qemu provider's ssh_user, ssh_private_key and ssh_host_key"
                        )
                    raise BuildHostError(f"{exc}{hint}{self.tail_text()}") from exc
                except CommunicatorError:
                    await anyio.sleep(0.25)
        raise BuildHostError(f"the build VM did not become reachable over SSH within {timeout:.0f}s{self.tail_text()}")

    async def _wait_winrm(self, comm: WinRMCommunicator, timeout: float) -> None:
        from aib_sdk.communicators.winrm import AuthenticationError

        try:
            await windows.wait_ready(comm, timeout, self._check_running)
        except AuthenticationError as exc:
            raise BuildHostError(f"WinRM refused the build credentials: {exc}{self.tail_text()}") from exc
        except CommunicatorError as exc:
            raise BuildHostError(
                f"the build VM did not become reachable over WinRM within {timeout:.0f}s: {exc}{self.tail_text()}"
            ) from exc

    def _check_running(self) -> None:
        if not self.alive():
            raise BuildHostError(f"QEMU exited while the guest was booting{self.tail_text()}")

    # Machine protocol ---------------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Power off from inside (``sync; sudo poweroff``; Windows: ``shutdown /s``), then ACPI via QMP, then kill.

        Each stage's duration is logged (source ``qemu``), so a slow shutdown shows where the time went.
        """
        default = windows.DEFAULT_POWEROFF if self.image.os_type == "Windows" else DEFAULT_POWEROFF
        command = self.image.attributes.get("poweroff_command", default)
        if self.alive():
            started = time.monotonic()
            try:
                await self.communicator.run(command, timeout=30)
            except CommunicatorError as exc:
                self.ctx.log("qemu", f"poweroff command did not complete: {exc}", "info")
            await self.communicator.aclose()
            asked = time.monotonic()
            if await process.wait_exit(self.pid or 0, self.settings.shutdown_timeout):
                self._log_stage(f"powered off by {command!r}", started, asked)
            else:
                self._log_stage(f"still running after {command!r}; ACPI power-off over QMP", started, asked)
                started = time.monotonic()
                await process.qmp_command(self.qmp_socket, "system_powerdown")
                if await process.wait_exit(self.pid or 0, 30):
                    self._log_stage("powered off by ACPI (QMP system_powerdown)", started, started)
                else:
                    self._log_stage("still running after ACPI power-off; stopping QEMU", started, started)
                    started = time.monotonic()
                    await self.kill("the guest did not power off")
                    self._log_stage("QEMU stopped (QMP quit)", started, started)
        self.stopped = True

    def _log_stage(self, what: str, started: float, command_done: float) -> None:
        now = time.monotonic()
        detail = ""
        if command_done > started:
            detail = f"command {command_done - started:.2f} s, then QEMU exit {now - command_done:.2f} s, "
        self.ctx.log("qemu", f"{what} ({detail}{now - started:.2f} s in all)", "info")

    async def kill(self, reason: str) -> None:
        """Stop QEMU: QMP ``quit``, then SIGTERM, then SIGKILL (with a warning)."""
        if not self.alive() or self.pid is None:
            return
        if await process.qmp_command(self.qmp_socket, "quit", timeout=3) and await process.wait_exit(self.pid, 5):
            return
        process.send(self.pid, signal.SIGTERM)
        if await process.wait_exit(self.pid, 5):
            return
        self.ctx.warn(f"QEMU (pid {self.pid}) killed: {reason}")
        process.send(self.pid, signal.SIGKILL)
        await process.wait_exit(self.pid, 5)

    async def capture(self, ctx: RunContext) -> Artifact:
        """Convert the overlay into a standalone qcow2 in the run's work directory."""
        if not self.stopped or self.alive():
            raise BuildHostError("capture() needs a machine that was shut down first")
        dst = ctx.staging.work / f"{self.directory.name}-os-disk.qcow2"
        await anyio.Path(dst).unlink(missing_ok=True)

        def progress(done: int, total: int | None) -> None:
            ctx.progress("convert", "capture OS disk", done, total)

        try:
            await disks.convert(self.overlay, "qcow2", dst, "qcow2", on_progress=progress)
        except BaseException:
            with cleanup_scope(30):
                await anyio.Path(dst).unlink(missing_ok=True)
            raise
        info = await disks.info(dst, "qcow2")
        return Artifact(
            path=dst,
            format="qcow2",
            virtual_size=info.virtual_size,
            os_type=self.image.os_type,
            hyper_v_generation=self.image.hyper_v_generation,
            source_version=self.image.exact_version,
            template_digest=ctx.template_digest,
            run_id=ctx.run_id,
            template_name=ctx.template_name,
            source_image=dataclasses.replace(self.image, saved_state=None),  # the state belongs to a layer only
        )

    async def snapshot(
        self, dest: Path, backing: Path, backing_format: str, *, state: StateRequest | None = None
    ) -> bool:
        """The step cache's layer: flush the guest, freeze the overlay over QMP, copy it to ``dest`` on ``backing``.

        With ``state`` (and :attr:`saves_state`): the CPUs stop, the overlay freezes and the RAM and device state go
        to ``state.state`` (the access file to ``state.access``) before the VM continues, unless the guest rebooted
        since this machine started (``state.refusal`` says so)."""
        if self.data_disks:
            self.snapshot_refusal = "the VM has additionalDataDisks, whose state a layer of the OS disk would not hold"
            return False
        default = layers.WINDOWS_SYNC if self.image.os_type == "Windows" else layers.LINUX_SYNC
        command = self.image.attributes.get("sync_command", default)
        if state is not None and self.saves_state:
            command = f"{command} && cat {BOOT_ID_FILE}"
        result = await self.communicator.run(command, timeout=300)
        if not result.ok:
            raise BuildHostError(f"flushing the guest's disk before a snapshot failed (exit code {result.exit_code})")
        frozen, fresh = self.overlay, self.directory / f"os-disk-{self.snapshots + 1}.qcow2"
        if state is not None and self._may_save_state(state, result.stdout.strip().splitlines()):
            await self._freeze_with_state(fresh, state)
        else:
            await layers.freeze_overlay(self.qmp_socket, "os", fresh)
            self.snapshots += 1
            self.overlay = fresh
        await layers.write_layer(frozen, dest, backing, backing_format)
        return True

    def _may_save_state(self, state: StateRequest, output: list[str]) -> bool:
        """Whether to save the RAM state now: a machine able to, whose guest has not rebooted since it started."""
        if not self.saves_state:
            state.refusal = "this build VM cannot save its RAM state (Windows, UEFI, NVMe, data disks or a static key)"
            return False
        boot_id = output[-1] if output else ""
        reboots = isinstance(self.communicator, SshCommunicator) and self.communicator.reboots > 0
        if reboots or (self.boot_id and boot_id != self.boot_id):
            state.refusal = "the guest rebooted in this run (RAM state is kept only for layers before a reboot)"
            return False
        if self.boot_seconds and self.save_seconds > self.boot_seconds:
            # Not cheap enough: saving costs more, on every layer, than the boot a resume would spare.
            state.refusal = (
                f"saving it took {self.save_seconds:.1f}s, longer than booting this VM ({self.boot_seconds:.1f}s)"
            )
            return False
        self.boot_id = self.boot_id or boot_id
        return bool(boot_id)

    async def _freeze_with_state(self, fresh: Path, state: StateRequest) -> None:
        """Stop the CPUs, freeze the overlay, save RAM and device state and the access file, continue the VM."""
        started = time.monotonic()
        await layers.qmp_execute(self.qmp_socket, "stop", {})
        try:
            await layers.freeze_overlay(self.qmp_socket, "os", fresh)
            self.snapshots += 1
            self.overlay = fresh
            try:
                await layers.migrate_to_file(self.qmp_socket, state.state)
                await anyio.to_thread.run_sync(ramstate.write_access, state.access, await self._access())
            except (BuildHostError, OSError) as exc:
                state.refusal = f"saving it failed: {exc}"
                return
            state.shape, state.boot_id = self.shape, self.boot_id
        finally:
            with anyio.CancelScope(shield=True):
                await layers.qmp_execute(self.qmp_socket, "cont", {})
        self.save_seconds = time.monotonic() - started
        self.ctx.log("qemu", f"RAM state saved in {self.save_seconds:.1f}s", "info")

    async def _access(self) -> ramstate.Access:
        """What reconnecting to this guest later needs: user, client key, pinned host keys, the seed."""
        assert isinstance(self.communicator, SshCommunicator) and self.client_key_file is not None
        return ramstate.Access(
            user=self.communicator.username,
            client_key=await anyio.Path(self.client_key_file).read_bytes(),
            host_keys=list(self.communicator.pinned_host_keys),
            seed=await anyio.Path(self.directory / "seed.iso").read_bytes(),
        )

    async def keep(self) -> str:
        """Leave QEMU running; move its files out of the run's work directory; return how to reach it."""
        target = self.ctx.staging.run_directory / self.directory.name
        if not self.kept:
            await anyio.Path(self.directory).rename(target)
            self.directory = target
            self.kept = True
        stop = (
            f"(QEMU pid {self.pid}, QMP socket {self.qmp_socket}; "
            f"stop it with: kill {self.pid}; rm -r {self.socket_dir})"
        )
        if self.winrm is not None:
            return f"{await self._winrm_access_text(target)}   {stop}"
        key = target / "id_ed25519"
        known = target / "known_hosts"
        ssh = ["ssh", "-p", str(self.port), "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
        if await anyio.Path(key).exists():
            ssh += ["-i", str(key)]
        user = self.communicator.username if isinstance(self.communicator, SshCommunicator) else ""
        ssh.append(f"{user}@127.0.0.1")
        return f"{shlex.join(ssh)}   {stop}"

    async def _winrm_access_text(self, directory: Path) -> str:
        """How to reach a kept Windows VM; a generated password goes to a 0600 file (never into the text)."""
        assert self.winrm is not None
        if self.winrm.generated:
            secret = directory / windows.PASSWORD_FILE
            await anyio.to_thread.run_sync(_write_private, secret, self.winrm.password + "\n")
            where = f"password in {secret} (mode 0600)"
        else:
            where = "password: the qemu provider's winrm_password / winrm_password_file setting"
        scheme = "https" if self.winrm.transport == "basic-https" else "http"
        return (
            f"WinRM {scheme}://127.0.0.1:{self.port}/wsman ({self.winrm.transport}), "
            f"user {self.winrm.username}, {where}"
        )

    # Teardown -----------------------------------------------------------------------------------------------

    async def teardown(self) -> None:
        """Close SSH, stop QEMU, remove the VM's files (unless kept). Call shielded and bounded."""
        await self.communicator.aclose()
        if self.kept:
            return
        await self.kill("cleanup after the build")
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(self.directory, ignore_errors=True))
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(self.socket_dir, ignore_errors=True))


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only (mode 0600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
