"""End-to-end tests of the QEMU build host, the SSH communicator and the Linux steps on the tiny guest."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import anyio
import asyncssh
import pytest

from aib_provider_qemu import accel, process
from aib_provider_qemu.host import QemuBuildHost
from aib_provider_qemu.tiny_source import TinyGuestSource
from aib_sdk.artifacts import DiskImage
from aib_sdk.communicators.ssh import HostKeyMismatch, SshCommunicator
from aib_sdk.config import Config
from aib_sdk.context import StepContext
from aib_sdk.errors import BuildHostError, CommandTimeout, CommunicatorError, StepError
from aib_sdk.events import LogLine
from aib_sdk.models.specs import FileCustomizer, ShellCustomizer
from aib_sdk.protocols import VmRequest
from aib_sdk.steps.linux import DeprovisionSpec, FileStep, LinuxDeprovision, ShellStep
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.fixtures_vm import read_ext4_file
from aib_sdk.testing.tiny_guest import ensure_tiny_guest

pytestmark = [pytest.mark.vm, pytest.mark.anyio]


def qemu_running(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return out.stdout.split()


@pytest.fixture
async def image(tiny_guest_cache: Path) -> DiskImage:
    from aib_sdk.models.specs import PlatformImageSource
    from aib_sdk.testing.tiny_guest import SPEC

    ctx = make_run_context(Path("/tmp"), config=Config({}, {**os.environ, "AIB_CACHE": str(tiny_guest_cache)}))
    return await TinyGuestSource().resolve(PlatformImageSource.model_validate(SPEC), ctx)


async def test_boot_run_upload_reboot_capture(tmp_path: Path, image: DiskImage) -> None:
    events: list[object] = []
    ctx = make_run_context(tmp_path, emit=events.append)
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(8 * 1024 * 1024))
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    progress: list[tuple[int, int | None]] = []
    base_before = hashlib.sha256(image.path.read_bytes()).hexdigest()
    async with QemuBuildHost().start(image, VmRequest(vm_size="Standard_B1s"), ctx) as machine:
        overlay = str(machine.overlay)
        assert qemu_running(overlay)
        comm = machine.communicator
        lines: list[tuple[str, str]] = []
        result = await comm.run("id -un; echo to-stderr >&2; exit 3", on_output=lambda *sl: lines.append(sl))
        assert result.exit_code == 3
        assert ("stdout", "packer") in lines and ("stderr", "to-stderr") in lines
        # A wrong pinned host key is refused; trust-on-first-use pins the key the guest really has.
        wrong = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        client = list(comm._client_keys)
        with pytest.raises(HostKeyMismatch):
            await SshCommunicator(port=machine.port, username="packer", client_keys=client, host_keys=[wrong]).connect(
                timeout=30
            )
        with pytest.raises(CommunicatorError, match="no pinned host key"):
            await SshCommunicator(port=machine.port, username="packer", client_keys=client).connect()
        tofu = SshCommunicator(port=machine.port, username="packer", client_keys=client, trust_on_first_use=True)
        assert (await tofu.run("echo tofu")).stdout == "tofu"
        assert tofu.pinned_host_keys[0].split()[:2] in [k.split()[:2] for k in comm.pinned_host_keys]
        await tofu.aclose()
        with pytest.raises(CommandTimeout):
            await comm.run("sleep 60", timeout=1)
        assert (await comm.run("echo after-timeout")).stdout == "after-timeout"
        root = await comm.run("sudo id -u")
        assert root.stdout.strip() == "0"
        await comm.upload(payload, "/tmp/payload.bin", on_progress=lambda d, t: progress.append((d, t)))
        assert progress[-1] == (8 * 1024 * 1024, 8 * 1024 * 1024)
        check = await comm.run("sha256sum /tmp/payload.bin")
        assert check.stdout.split()[0] == digest
        made = await comm.run("echo persisted-change | sudo tee /etc/aib-marker")
        assert made.ok
        before = await comm.boot_id()
        rebooted = await comm.run("sudo reboot; sleep 30")
        assert rebooted.exit_code == -1
        await comm.wait_rebooted(before, timeout=240)  # a TCG reboot on a loaded 2-core machine can be slow
        assert await comm.boot_id() != before
        back = tmp_path / "back.bin"
        await comm.download("/tmp/payload.bin", back)
        assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
        await machine.shutdown()
        artifact = await machine.capture(ctx)
    assert not qemu_running(overlay)
    assert not Path(overlay).exists()
    assert artifact.format == "qcow2" and artifact.virtual_size == image.path.stat().st_size
    content = await read_ext4_file(artifact.path, "qcow2", "/etc/aib-marker", tmp_path)
    assert content == b"persisted-change\n"
    assert hashlib.sha256(image.path.read_bytes()).hexdigest() == base_before
    serial = [e.line for e in events if isinstance(e, LogLine) and e.stream == "serial"]
    assert any("AIB-TINY-GUEST-READY" in line for line in serial)


async def test_linux_steps_disks_and_deprovision(tmp_path: Path, image: DiskImage) -> None:
    ctx = make_run_context(tmp_path)
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho from-script-uri $(id -un)\n")
    script_sha = hashlib.sha256(script.read_bytes()).hexdigest()
    payload = tmp_path / "payload.txt"
    payload.write_text("file-step-content\n")
    vm = VmRequest(os_disk_size_gb=1, data_disk_sizes_gb=(1,))
    async with QemuBuildHost().start(image, vm, ctx) as machine:
        comm = machine.communicator
        n = iter(range(100))

        def step(name: str) -> StepContext:
            return StepContext(run=ctx, communicator=comm, phase="customize", index=next(n), name=name, type="Shell")

        # osDiskSizeGB grew the overlay; the data disk is attached (as is the seed).
        sizes = await comm.run("cat /sys/block/vda/size; ls /sys/block")
        assert sizes.stdout.splitlines()[0] == str(1024**3 // 512)
        assert "vdb" in sizes.stdout and "vdc" in sizes.stdout

        inline = step("inline")
        await ShellStep().run(
            ShellCustomizer.model_validate(
                {"type": "Shell", "inline": ["echo one", "sudo sh -c 'echo root-made > /etc/made-by-inline'"]}
            ),
            inline,
        )
        assert "one" in inline.tail
        assert (await comm.run("cat /etc/made-by-inline")).stdout == "root-made"

        by_uri = step("by-uri")
        await ShellStep().run(
            ShellCustomizer.model_validate(
                {"type": "Shell", "scriptUri": script.as_uri(), "sha256Checksum": script_sha}
            ),
            by_uri,
        )
        assert "from-script-uri packer" in by_uri.tail

        failing = step("failing")
        with pytest.raises(StepError) as info:
            await ShellStep().run(
                ShellCustomizer.model_validate(
                    {"type": "Shell", "inline": ["echo before-failure", "false", "echo never-printed"]}
                ),
                failing,
            )
        assert info.value.exit_code == 1 and "before-failure" in info.value.log_tail
        assert "never-printed" not in failing.tail

        before = await comm.boot_id()
        rebooting = step("reboot")
        await ShellStep().run(
            ShellCustomizer.model_validate({"type": "Shell", "inline": ["echo rebooting", "sudo reboot", "sleep 60"]}),
            rebooting,
        )
        assert await comm.boot_id() != before

        await FileStep().run(
            FileCustomizer.model_validate(
                {"type": "File", "sourceUri": payload.as_uri(), "destination": "/tmp/payload.txt"}
            ),
            step("file"),
        )
        assert (await comm.run("cat /tmp/payload.txt")).stdout == "file-step-content"
        with pytest.raises(StepError, match="does not exist"):
            await FileStep().run(
                FileCustomizer.model_validate(
                    {"type": "File", "sourceUri": payload.as_uri(), "destination": "/no/such/dir/x"}
                ),
                step("file2"),
            )

        deprov = step("deprovision")
        await LinuxDeprovision().run(DeprovisionSpec(type="Deprovision"), deprov)
        gone = await comm.run("ls /home/packer/.ssh/authorized_keys /etc/dropbear/dropbear_rsa_host_key")
        assert gone.exit_code != 0
        overlay = str(machine.overlay)
    assert not qemu_running(overlay)


async def test_a_guest_that_never_gets_ready_fails_with_the_serial_tail(tmp_path: Path, image: DiskImage) -> None:
    env = {**os.environ, "AIB_QEMU_BOOT_TIMEOUT": "6", "AIB_HOME": str(tmp_path / "home")}
    ctx = make_run_context(tmp_path, config=Config({}, env))
    broken = dataclasses.replace(image, kernel_args="console=ttyS0 rdinit=/missing init=/bin/false panic=0")
    with pytest.raises(BuildHostError, match="serial console") as info:
        async with QemuBuildHost().start(broken, VmRequest(), ctx):
            pytest.fail("the machine should never be ready")
    assert "within 6s" in str(info.value)
    assert not qemu_running(str(ctx.staging.work))
    assert list(ctx.staging.work.iterdir()) == []


async def test_cancel_during_boot_leaves_nothing(tmp_path: Path, image: DiskImage) -> None:
    ctx = make_run_context(tmp_path)
    started = anyio.Event()

    def seen(event: object) -> None:
        if isinstance(event, LogLine) and event.stream == "serial":
            started.set()

    ctx.emit = seen
    async with anyio.create_task_group() as tg:

        async def boot() -> None:
            async with QemuBuildHost().start(image, VmRequest(), ctx):
                await anyio.sleep_forever()

        tg.start_soon(boot)
        with anyio.fail_after(120):
            await started.wait()
        assert qemu_running(str(ctx.staging.work))
        tg.cancel_scope.cancel()
    assert not qemu_running(str(ctx.staging.work))
    assert list(ctx.staging.work.iterdir()) == []


async def test_keep_leaves_the_vm_running_and_reachable(tmp_path: Path, image: DiskImage) -> None:
    ctx = make_run_context(tmp_path)
    async with QemuBuildHost().start(image, VmRequest(), ctx) as machine:
        access = await machine.keep()
        pid, port, directory, sockets = machine.pid, machine.port, machine.directory, machine.socket_dir
    assert pid is not None
    try:
        assert process.alive(pid)
        assert f"-p {port}" in access and str(directory / "id_ed25519") in access and f"kill {pid}" in access
        assert directory.parent == ctx.staging.run_directory  # out of the work directory the Builder removes
        key = asyncssh.read_private_key(directory / "id_ed25519")
        known = (directory / "known_hosts").read_text()
        comm = SshCommunicator(port=port, username="packer", client_keys=[key], host_keys=[known])
        assert (await comm.run("echo still-here")).stdout == "still-here"
        await comm.aclose()
    finally:
        process.send(pid, signal.SIGKILL)
        shutil.rmtree(sockets)
    assert await process.wait_exit(pid, 10)


async def test_tiny_guest_disk_is_cached_and_carries_its_tools(tmp_path: Path, tiny_guest_cache: Path) -> None:
    guest = await ensure_tiny_guest(tiny_guest_cache)
    with anyio.fail_after(5):  # cached: no apt, no mkfs
        again = await ensure_tiny_guest(tiny_guest_cache)
    assert again == guest and guest.disk.is_file() and guest.kernel.is_file()
    sudo = await read_ext4_file(guest.disk, "raw", "/usr/bin/sudo", tmp_path)
    assert b"busybox-suid su" in sudo
    order = (await read_ext4_file(guest.disk, "raw", "/lib/modules/aib/order", tmp_path)).decode().split()
    assert order.index("cdrom") < order.index("isofs") and order.index("virtio") < order.index("virtio_pci")
    assert (await read_ext4_file(guest.disk, "raw", "/usr/lib/openssh/sftp-server", tmp_path)).startswith(b"\x7fELF")
    with pytest.raises(FileNotFoundError):  # host keys come from each build's seed, never baked in
        await read_ext4_file(guest.disk, "raw", "/etc/dropbear/dropbear_ed25519_host_key", tmp_path)


async def test_kvm_test_boot_agrees_with_the_host(tiny_guest_cache: Path) -> None:
    """Here /dev/kvm is a paravirtual KVM that aborts real guests: the test boot must say no (yes on real KVM)."""
    guest = await ensure_tiny_guest(tiny_guest_cache)
    expected = accel.kvm_module_loaded() and os.access("/dev/kvm", os.R_OK | os.W_OK)
    with anyio.fail_after(60):
        assert await accel.kvm_test_boot("qemu-system-x86_64", guest.kernel, deadline=8) is expected
