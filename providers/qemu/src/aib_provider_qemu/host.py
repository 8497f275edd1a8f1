"""``QemuBuildHost``: boots a :class:`DiskImage` in QEMU (TCG, or KVM when a probe shows it works).

The base image is never written: the VM runs on a qcow2 overlay in the run's work directory (grown to
``osDiskSizeGB``), with ``additionalDataDisks`` as extra qcow2 disks, the ``[qemu] network``
(:mod:`aib_provider_qemu.network`: outbound NAT by default) and one host port on 127.0.0.1 forwarded to the guest's
SSH port (Windows: its WinRM port).
``cloud-init`` images get a NoCloud seed with a fresh client key and pinned host keys; ``static`` images use the
``ssh_*`` settings. Windows images (:mod:`aib_provider_qemu.windows`) get a cloudbase-init config drive creating the
build user with a per-build password, or use the ``winrm_*`` settings.
Leaving :meth:`QemuBuildHost.start`'s context stops QEMU and removes every file it made (unless ``keep()``),
shielded from cancellation and bounded in time.
"""

from __future__ import annotations

import functools
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import anyio
import anyio.to_thread

from aib_provider_qemu import accel as accel_mod
from aib_provider_qemu import child as qemu_child
from aib_provider_qemu import layers, ramstate, seed, vmsizes, windows
from aib_provider_qemu.machine import QemuMachine
from aib_provider_qemu.network import Network, network_for, nic_args
from aib_provider_qemu.settings import QemuSettings
from aib_sdk import disks
from aib_sdk.artifacts import DiskImage
from aib_sdk.cache.settings import CacheSettings
from aib_sdk.communicators.ssh import SshCommunicator
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import BuildError, BuildHostError, CommunicatorError
from aib_sdk.private_files import write_private
from aib_sdk.protocols import Communicator, Machine, VmRequest
from aib_sdk.runtime import cleanup_scope

GIB = 1024**3
CLEANUP_TIMEOUT = 60.0
RESUME_TIMEOUT = 120.0
"""Seconds a resumed guest may take to answer over SSH before the build boots the layer instead."""
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
_ACCEL_CACHE: dict[str, accel_mod.Accel] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _drive_args(
    interface: str, drive_id: str, file: Path, fmt: str, serial: str, *, readonly: bool = False
) -> list[str]:
    drive = f"if=none,id={drive_id},file={file},format={fmt},discard=unmap"
    if readonly:
        drive = f"if=none,id={drive_id},file={file},format={fmt},readonly=on"
    if interface == "nvme":
        device = f"nvme,drive={drive_id},serial={serial}"
    elif interface == "scsi":
        device = f"scsi-hd,drive={drive_id},bus=scsi0.0,serial={serial}"
    elif interface == "ide":
        device = f"ide-hd,drive={drive_id},bus=ide.0"
    else:
        device = f"virtio-blk-pci,drive={drive_id},serial={serial}"
    return ["-drive", drive, "-device", device]


def qemu_command(
    *,
    binary: str,
    accel: accel_mod.Accel,
    cpus: int,
    memory_mib: int,
    image: DiskImage,
    overlay: Path,
    data_disks: list[Path],
    seed_iso: Path | None,
    serial_log: Path,
    qmp_socket: Path,
    port: int,
    name: str,
    guest_port: int | None = None,
    ovmf_vars: Path | None = None,
    nic_model: str | None = None,
    network: Network | None = None,
    pidfile: Path | None = None,
) -> list[str]:
    """The QEMU command line of a build VM (in the foreground, a child of the builder: see
    :mod:`aib_provider_qemu.child`; serial to a file; QMP on a unix socket).

    Linux guests forward ``port`` to the guest's SSH port over a virtio NIC. Windows guests forward it to WinRM
    (5985, or 5986 with ``guest_port``), use ``nic_model`` (default e1000: no drivers needed), keep the RTC in local
    time as Windows expects, and read the seed from an AHCI CD-ROM. Credentials never appear here.
    """
    is_windows = image.os_type == "Windows"
    guest_port = guest_port or (windows.WINRM_HTTP_PORT if is_windows else 22)
    model = nic_model or ("e1000" if is_windows else "virtio-net-pci")
    args = [
        binary,
        "-name",
        name,
        "-machine",
        "q35",
        *accel_mod.accel_args(accel),
        "-smp",
        str(cpus),
        "-m",
        str(memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        f"file:{serial_log}",
        "-qmp",
        f"unix:{qmp_socket},server=on,wait=off",
    ]
    if pidfile is not None:
        args += ["-pidfile", str(pidfile)]
    if image.disk_interface == "scsi":
        args += ["-device", "virtio-scsi-pci,id=scsi0"]
    args += _drive_args(image.disk_interface, "os", overlay, "qcow2", "aib-os")
    for index, disk in enumerate(data_disks):
        args += _drive_args("virtio", f"data{index}", disk, "qcow2", f"aib-data{index}")
    if seed_iso is not None and is_windows:
        args += [
            "-drive",
            f"if=none,id=seed,file={seed_iso},format=raw,media=cdrom,readonly=on",
            "-device",
            "ide-cd,drive=seed,bus=ide.1",
        ]
    elif seed_iso is not None:
        args += _drive_args("virtio", "seed", seed_iso, "raw", "aib-seed", readonly=True)
    args += nic_args(network or Network(), model=model, port=port, guest_port=guest_port)
    if is_windows:
        args += ["-rtc", "base=localtime,clock=host"]
    args += ["-device", "virtio-rng-pci"]
    if image.kernel is not None:
        args += ["-kernel", str(image.kernel.absolute())]
        if image.initrd is not None:
            args += ["-initrd", str(image.initrd.absolute())]
        if image.kernel_args:
            args += ["-append", image.kernel_args]
    elif image.hyper_v_generation == "V2" and ovmf_vars is not None:
        args += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={ovmf_vars}",
        ]
    return args


async def choose_accel(settings: QemuSettings, kernel: Path | None, cache_dir: Path | None = None) -> accel_mod.Accel:
    """The accelerator for this host: the setting, or (``auto``) a probe cached per emulator binary (its test boot
    remembered under ``<cache_dir>/qemu-accel/`` across builds, see :func:`accel.remembered`)."""
    if settings.accel in ("kvm", "tcg"):
        return "kvm" if settings.accel == "kvm" else "tcg"
    cached = _ACCEL_CACHE.get(settings.binary)
    if cached is None:

        async def test_boot() -> bool:
            ok: bool = await accel_mod.kvm_test_boot(settings.binary, kernel)
            return ok

        boot: accel_mod.TestBoot = test_boot
        if cache_dir is not None:
            facts = functools.partial(accel_mod.test_boot_facts, settings.binary, kernel)
            boot = accel_mod.remembered(test_boot, cache_dir / "qemu-accel", facts)
        cached = await accel_mod.probe(test_boot=boot)
        _ACCEL_CACHE[settings.binary] = cached
    return cached


PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy")


def proxy_environment(env: dict[str, str]) -> dict[str, str]:
    """The host's proxy variables (``[qemu] offer_proxy``), in both spellings, for the steps' sessions."""
    out: dict[str, str] = {}
    for name in PROXY_VARIABLES:
        value = env.get(name) or env.get(name.upper())
        if value:
            out[name] = out[name.upper()] = value
    return out


def _read_host_key_setting(value: str) -> list[str]:
    """The pinned host key(s): the setting itself, or the content of the file it names (sync)."""
    path = Path(value).expanduser()
    if len(value) < 4096 and "\n" not in value and path.is_file():
        return [path.read_text()]
    return [value]


if TYPE_CHECKING:  # static conformance checks for mypy (the WinRM stack loads for Windows guests only)
    from aib_sdk.communicators.winrm import WinRMCommunicator

    _c: type[Communicator] = SshCommunicator
    _w: type[Communicator] = WinRMCommunicator


class QemuBuildHost:
    """Builds in a local QEMU VM (``name = "qemu"``)."""

    name: ClassVar[str] = "qemu"

    @classmethod
    def available(cls, config: Config) -> bool:
        return shutil.which(QemuSettings.from_config(config).binary) is not None

    @classmethod
    async def accelerator(cls, config: Config) -> str:
        """The accelerator builds here get (``kvm`` only when a probe boot works, else ``tcg``; ``[qemu] accel``)."""
        return await choose_accel(QemuSettings.from_config(config), None, config.cache)

    @classmethod
    def cache_facts(cls, config: Config) -> dict[str, object]:
        """Settings that change what a build's disk holds (part of every step-cache key): users and network."""
        settings = QemuSettings.from_config(config)
        section = config.section("qemu")
        return {
            "buildUser": settings.build_user,
            "windowsBuildUser": settings.windows_build_user,
            "sshUser": settings.ssh_user,
            "winrmUser": settings.winrm_user,
            "network": str(section.get("network", "nat")),
            "networks": section.get("networks"),
        }

    async def preflight(self, vm: VmRequest, ctx: RunContext) -> None:
        """Before anything starts: the settings parse and ``vnetConfig.subnetId`` maps to a network."""
        settings = QemuSettings.from_config(ctx.config)
        network_for(settings.network, settings.networks, vm.extra.get("subnetId"))

    def start(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AbstractAsyncContextManager[Machine]:
        """Boot ``image`` and yield a ready :class:`QemuMachine`; the VM is gone when the context exits."""
        return cast("AbstractAsyncContextManager[Machine]", self._run(image, vm, ctx))

    @asynccontextmanager
    async def _run(self, image: DiskImage, vm: VmRequest, ctx: RunContext) -> AsyncIterator[QemuMachine]:
        settings = QemuSettings.from_config(ctx.config)
        if shutil.which(settings.binary) is None:
            raise BuildHostError(f"{settings.binary} not found: install qemu-system-x86 (Debian) or QEMU")
        network = network_for(settings.network, settings.networks, vm.extra.get("subnetId"))  # before any boot
        vm_id = f"vm-{uuid.uuid4().hex[:10]}"
        directory = (ctx.staging.work / vm_id).absolute()
        await anyio.Path(directory).mkdir(parents=True, exist_ok=False)
        # Outside the run (a unix socket path must be short): journaled first, so aib gc finds it after a crash.
        socket_dir = Path(tempfile.gettempdir()) / f"aib-qemu-{vm_id}"
        sockets_entry = await ctx.journal.acquire("file", {"path": str(socket_dir)}, "QMP socket directory")
        await anyio.Path(socket_dir).mkdir(mode=0o700)
        vm_entry = await ctx.journal.acquire("qemu.vm", {"tag": f"aib-{vm_id}"}, f"QEMU build VM aib-{vm_id}")
        machine: QemuMachine | None = None
        children: list[qemu_child.QemuChild] = []
        try:
            try:
                async with anyio.create_task_group() as tg:
                    try:
                        if image.saved_state is not None:
                            machine = await self._resume(image, vm, ctx, settings, directory, socket_dir, tg, children)
                        if machine is None:
                            machine, seed_iso = await self._machine(image, ctx, settings, directory, socket_dir)
                            await self._boot(machine, vm, seed_iso, tg, children, network)
                        yield machine
                    finally:
                        if machine is not None:
                            with cleanup_scope(CLEANUP_TIMEOUT):
                                await machine.teardown()
                        tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The serial follower never fails: surface the caller's (or the boot's) own exception.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from group.exceptions[0].__cause__
                raise
        finally:
            kept = machine is not None and machine.kept
            with cleanup_scope(CLEANUP_TIMEOUT):
                for started in children:
                    # A kept VM outlives the builder; any other QEMU is killed by its watchdog if still there.
                    if kept and machine is not None and started.pid == machine.pid:
                        started.disarm()
                    else:
                        started.release()
                    await started.reap()
                if kept and machine is not None:
                    await ctx.journal.keep(vm_entry, f"kept QEMU pid {machine.pid}")
                    await ctx.journal.keep(sockets_entry)
                else:
                    await ctx.journal.release(vm_entry)
                    await anyio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))
                    await anyio.to_thread.run_sync(lambda: shutil.rmtree(socket_dir, ignore_errors=True))
                    await ctx.journal.release(sockets_entry)

    async def _machine(
        self, image: DiskImage, ctx: RunContext, settings: QemuSettings, directory: Path, socket_dir: Path
    ) -> tuple[QemuMachine, Path | None]:
        """A machine to boot ``image`` with fresh build credentials, and the seed that hands them to the guest."""
        winrm: windows.WinRMAccess | None = None
        if image.os_type == "Windows":
            winrm, seed_iso = await self._windows_access(image, ctx, settings, directory)
            communicator: SshCommunicator | WinRMCommunicator = windows.communicator(winrm, 0)
            client_key = known_hosts = None
        else:
            communicator, seed_iso, client_key, known_hosts = await self._access(image, ctx, settings, directory)
        machine = _new_machine(image, ctx, settings, directory, socket_dir, communicator, client_key, winrm)
        machine.known_hosts_file = known_hosts
        return machine, seed_iso

    async def _resume(
        self,
        image: DiskImage,
        vm: VmRequest,
        ctx: RunContext,
        settings: QemuSettings,
        directory: Path,
        socket_dir: Path,
        tg: anyio.abc.TaskGroup,
        children: list[qemu_child.QemuChild],
    ) -> QemuMachine | None:
        """Resume the RAM state saved with ``image`` (a step-cache layer) instead of booting it: the same VM shape,
        ``-incoming`` from the state, the guest's clock set, the saved boot id checked. ``None`` (with a warning,
        everything it started stopped and removed) when it cannot: the caller then boots the layer."""
        saved = image.saved_state
        assert saved is not None
        network = network_for(settings.network, settings.networks, vm.extra.get("subnetId"))
        machine: QemuMachine | None = None
        started = time.monotonic()
        try:
            if image.path.name.split(".", 1)[0] != saved.layer or saved.state.parent != image.path.parent:
                raise BuildHostError("it was not saved with this disk")  # RAM and disk must be one moment's
            access = await anyio.to_thread.run_sync(ramstate.read_access, saved.access)
            seed_iso, client_key = directory / "seed.iso", directory / "id_ed25519"
            await anyio.to_thread.run_sync(write_private, seed_iso, access.seed)
            await anyio.to_thread.run_sync(write_private, client_key, access.client_key)
            try:
                communicator = SshCommunicator(
                    username=access.user, client_keys=[client_key], host_keys=access.host_keys
                )
            except CommunicatorError as exc:
                raise BuildHostError("its access file holds unusable keys") from exc
            machine = _new_machine(image, ctx, settings, directory, socket_dir, communicator, client_key)
            plan = await self._plan(machine, vm, seed_iso, network)
            shape = await vm_shape(plan)
            if shape != saved.shape:
                raise BuildHostError(
                    "it was saved by another VM shape (vCPUs, memory, devices, accelerator or QEMU version differ)"
                )
            await self._spawn(machine, plan, children, layers.incoming_args(saved.state))
            await layers.resume_incoming(machine.qmp_socket, machine.alive, timeout=settings.boot_timeout)
            machine.ready.set()  # the guest is up: it prints no readiness line again
            await self._attach(machine)
            await machine.wait_ready(min(settings.boot_timeout, RESUME_TIMEOUT))
            await layers.settle_restored(machine.communicator, saved.boot_id)
        except Exception as exc:  # whatever went wrong, the layer itself still boots
            ctx.warn(f"the RAM state of layer {saved.layer[:12]} could not be resumed ({exc}); booting the layer")
            if machine is not None:
                with cleanup_scope(CLEANUP_TIMEOUT):
                    await machine.communicator.aclose()
                    await machine.kill("its RAM state could not be resumed")
                    machine.pid = None
                    await anyio.Path(machine.overlay).unlink(missing_ok=True)
            return None
        machine.shape, machine.boot_id, machine.resumed_state = shape, saved.boot_id, True
        tg.start_soon(machine.follow_serial)
        ctx.log(
            "qemu",
            f"resumed the RAM state of layer {saved.layer[:12]} on 127.0.0.1:{machine.port} "
            f"in {time.monotonic() - started:.1f}s (no boot)",
            "info",
        )
        return machine

    async def _access(
        self, image: DiskImage, ctx: RunContext, settings: QemuSettings, directory: Path
    ) -> tuple[SshCommunicator, Path | None, Path | None, Path | None]:
        """The communicator (with pinned host keys) and, for cloud-init images, the seed that makes it work."""
        if image.access == "static":
            if not settings.ssh_user or settings.ssh_private_key is None:
                raise BuildHostError(
                    "this image reads no cloud-init seed: set the qemu provider's ssh_user and ssh_private_key "
                    "(AIB_QEMU_SSH_USER, AIB_QEMU_SSH_PRIVATE_KEY)"
                )
            host_keys = (
                await anyio.to_thread.run_sync(_read_host_key_setting, settings.ssh_host_key)
                if settings.ssh_host_key
                else []
            )
            if not host_keys and not settings.trust_on_first_use:
                raise BuildHostError(
                    "no pinned SSH host key for this image: set the qemu provider's ssh_host_key "
                    "(AIB_QEMU_SSH_HOST_KEY) or opt in to trust-on-first-use"
                )
            try:
                comm = SshCommunicator(
                    username=settings.ssh_user,
                    client_keys=[settings.ssh_private_key],
                    host_keys=host_keys,
                    trust_on_first_use=settings.trust_on_first_use,
                )
            except CommunicatorError as exc:
                raise BuildHostError(str(exc)) from exc
            return comm, None, None, None
        keys = await seed.generate_keys()
        seed_iso = directory / "seed.iso"
        await seed.write_seed(seed_iso, user=settings.build_user, keys=keys, instance_id=f"aib-{ctx.run_id}")
        client_key = directory / "id_ed25519"
        private = bytes(keys.client.export_private_key("openssh"))
        await anyio.to_thread.run_sync(write_private, client_key, private)  # created 0600: no chmod window
        comm = SshCommunicator(username=settings.build_user, client_keys=[keys.client], host_keys=keys.host_public)
        return comm, seed_iso, client_key, None

    async def _windows_access(
        self, image: DiskImage, ctx: RunContext, settings: QemuSettings, directory: Path
    ) -> tuple[windows.WinRMAccess, Path | None]:
        """WinRM credentials and, for cloudbase-init images, the config drive that creates the build user."""
        if image.access == "static":
            return await windows.static_access(settings), None
        access = windows.seeded_access(settings)
        seed_iso = directory / "seed.iso"
        await windows.write_seed(
            seed_iso, user=access.username, password=access.password, instance_id=f"aib-{ctx.run_id}"
        )
        return access, seed_iso

    async def _boot(
        self,
        machine: QemuMachine,
        vm: VmRequest,
        seed_iso: Path | None,
        tg: anyio.abc.TaskGroup,
        children: list[qemu_child.QemuChild],
        network: Network | None = None,
    ) -> None:
        ctx, settings = machine.ctx, machine.settings
        plan = await self._plan(machine, vm, seed_iso, network)
        started = time.monotonic()
        await self._spawn(machine, plan, children)
        await self._attach(machine)
        tg.start_soon(machine.follow_serial)
        await machine.wait_ready(settings.windows_boot_timeout if machine.winrm is not None else settings.boot_timeout)
        machine.boot_seconds = time.monotonic() - started
        if machine.winrm is not None and seed_iso is not None:
            # The guest has read it: the only on-disk copy of the password goes (QEMU keeps its open handle).
            await anyio.Path(seed_iso).unlink(missing_ok=True)
        if ram_state_wanted(ctx) and machine.can_save_state(plan):
            machine.shape = await vm_shape(plan)
        ctx.log("qemu", f"guest ready on 127.0.0.1:{machine.port}", "info")

    async def _plan(
        self, machine: QemuMachine, vm: VmRequest, seed_iso: Path | None, network: Network | None
    ) -> dict[str, Any]:
        """Create the VM's disks and choose its shape: the :func:`qemu_command` arguments but the port."""
        image, ctx, settings = machine.image, machine.ctx, machine.settings
        size = None
        if vm.os_disk_size_gb:
            wanted = vm.os_disk_size_gb * GIB
            base_info = await disks.info(image.path, image.format)
            if wanted >= base_info.virtual_size:
                size = wanted
            else:
                ctx.warn(
                    f"osDiskSizeGB {vm.os_disk_size_gb} is smaller than the source disk "
                    f"({base_info.virtual_size / GIB:.1f} GiB): the disk keeps its size"
                )
        await disks.create_overlay(image.path, image.format, machine.overlay, size=size)
        data_disks: list[Path] = []
        for index, gb in enumerate(vm.data_disk_sizes_gb):
            path = machine.directory / f"data-{index}.qcow2"
            try:
                await disks.create(path, "qcow2", gb * GIB)
            except BuildError as exc:
                raise BuildHostError(f"cannot create data disk {index}: {exc}") from exc
            data_disks.append(path)
        machine.data_disks = len(data_disks)
        ovmf_vars = None
        if image.kernel is None and image.hyper_v_generation == "V2":
            if not await anyio.Path(OVMF_CODE).is_file():
                raise BuildHostError("hyperVGeneration V2 needs UEFI firmware: install Debian's ovmf package")
            ovmf_vars = machine.directory / "OVMF_VARS.fd"
            await anyio.to_thread.run_sync(shutil.copyfile, OVMF_VARS, ovmf_vars)
        test_kernel = image.kernel or next(iter(sorted(ctx.cache_dir.glob("tiny-guest/*/vmlinuz"))), None)
        accel = await choose_accel(settings, test_kernel, ctx.cache_dir)
        shape = vmsizes.shape(
            vm.vm_size, generation=image.hyper_v_generation, cpus=settings.cpus, memory_mib=settings.memory_mib
        )
        caps = [int(image.attributes.get("memory_cap_mib") or 0)]
        if accel == "tcg":
            caps.append(settings.tcg_memory_cap_mib)
        cap = min((c for c in caps if c > 0), default=0)
        if cap and settings.memory_mib is None and shape.memory_mib > cap:
            # Under TCG the guest kernel initializes its memory map slowly: every GiB more slows the boot.
            shape = vmsizes.VmShape(shape.cpus, cap)
        if image.os_type == "Windows" and image.disk_interface in ("virtio", "scsi"):
            ctx.log(
                "qemu",
                f"Windows guest on a {image.disk_interface} disk: the image must carry the virtio-win storage driver "
                '(else use "diskInterface": "ide", an AHCI disk Windows drives natively)',
                "info",
            )
        network = network or Network()
        how = "resuming" if image.saved_state is not None else "booting"
        ctx.log(
            "qemu",
            f"{how} {image.path.name} ({accel}, {shape.cpus} vCPU, {shape.memory_mib} MiB, network {network.text})",
            "info",
        )
        return {
            "binary": settings.binary,
            "accel": accel,
            "cpus": shape.cpus,
            "memory_mib": shape.memory_mib,
            "image": image,
            "overlay": machine.overlay,
            "data_disks": data_disks,
            "seed_iso": seed_iso,
            "serial_log": machine.serial_log,
            "qmp_socket": machine.qmp_socket,
            "name": f"aib-{machine.directory.name}",
            "guest_port": machine.winrm.guest_port if machine.winrm is not None else None,
            "ovmf_vars": ovmf_vars,
            "nic_model": image.attributes.get("nic_model")
            or (settings.windows_nic_model if image.os_type == "Windows" else None),
            "network": network,
        }

    async def _spawn(
        self,
        machine: QemuMachine,
        plan: dict[str, Any],
        children: list[qemu_child.QemuChild],
        extra: list[str] | None = None,
    ) -> None:
        """Start QEMU (retrying when the forwarded port was taken meanwhile) and set the machine's port and pid."""
        tag = plan["name"]
        for attempt in range(5):
            port = free_port()
            args = qemu_command(**plan, port=port) + (extra or [])
            # Synchronous: the pid is known (and teardown can stop it) before the next await.
            started = qemu_child.spawn(args, tag=tag, cwd=machine.directory, stderr_file=machine.directory / "qemu.log")
            children.append(started)
            machine.pid = started.pid
            if await qemu_child.wait_started(started, machine.qmp_socket):
                break
            err = (await anyio.to_thread.run_sync(started.stderr_text)) or f"exit code {started.process.returncode}"
            machine.pid = None
            if "forward" in err.lower() and attempt < 4:
                continue
            raise BuildHostError(f"QEMU failed to start: {err}")
        machine.port = port

    async def _attach(self, machine: QemuMachine) -> None:
        """Point the machine's communicator at its forwarded port (and pin the host keys in a known_hosts file)."""
        if machine.winrm is not None:
            machine.communicator = windows.communicator(machine.winrm, machine.port)
            return
        assert isinstance(machine.communicator, SshCommunicator)
        machine.communicator.port = machine.port
        machine.communicator.machine_alive = machine.alive  # a VM that died is not waited for as a reboot
        if machine.settings.offer_proxy:
            machine.communicator.environment = proxy_environment(dict(machine.ctx.config.env))
        known = machine.directory / "known_hosts"
        await anyio.Path(known).write_text(
            "".join(f"[127.0.0.1]:{machine.port} {key}\n" for key in machine.communicator.pinned_host_keys)
        )
        machine.known_hosts_file = known


def _new_machine(
    image: DiskImage,
    ctx: RunContext,
    settings: QemuSettings,
    directory: Path,
    socket_dir: Path,
    communicator: SshCommunicator | WinRMCommunicator,
    client_key: Path | None,
    winrm: windows.WinRMAccess | None = None,
) -> QemuMachine:
    return QemuMachine(
        image=image,
        ctx=ctx,
        settings=settings,
        directory=directory,
        socket_dir=socket_dir,
        overlay=directory / "os-disk.qcow2",
        communicator=communicator,
        client_key_file=client_key,
        winrm=winrm,
    )


async def vm_shape(plan: dict[str, Any]) -> str:
    """The shape digest of the VM ``plan`` (:func:`qemu_command`'s arguments) describes: a saved RAM state resumes
    only in a VM of the same shape (:mod:`aib_provider_qemu.ramstate`)."""
    version = await anyio.to_thread.run_sync(ramstate.qemu_version, plan["binary"])
    return ramstate.shape_digest(version, qemu_command(**ramstate.normalized(plan)))


def ram_state_wanted(ctx: RunContext) -> bool:
    """Whether this build keeps RAM state with its layers (the step cache and ``[cache] ram_state`` both on)."""
    settings = CacheSettings.from_config(ctx.config)
    return bool(ctx.options.cache and ctx.options.ram_state and settings.enabled and settings.ram_state)
