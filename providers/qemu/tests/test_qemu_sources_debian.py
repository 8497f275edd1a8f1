"""The Debian ``PlatformImage``: real debootstraps from this machine's apt mirror into bootable disks.

Slow (about three minutes on an idle 2-core machine, far more under load): marked ``debian``. Sku ``12`` (BIOS,
GRUB in the MBR) is inspected without mounting it (its MBR, GRUB's core image and, with ``debugfs``, the ext4 root
at its partition offset), reused from the cache on a second resolve, and booted in QEMU to an SSH login as the
seed's build user with sudo; sku ``12-gen2`` (GPT, an ESP made with mtools) is booted through OVMF.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from aib_provider_qemu.debian import DebianPlatformSource
from aib_provider_qemu.debian.agent import READY_LINE
from aib_provider_qemu.debian.disk import GRUB_LIB
from aib_sdk.config import Config
from aib_sdk.errors import SourceError
from aib_sdk.events import LogLine, Progress
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

pytestmark = [pytest.mark.debian, pytest.mark.anyio]

SPEC = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}


def _debugfs(raw: Path, offset: int, request: str) -> str:
    out = subprocess.run(
        ["debugfs", "-R", request, f"{raw}?offset={offset}"], capture_output=True, text=True, check=True
    )
    return out.stdout


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("debian-cache")


def _ctx(tmp_path: Path, cache: Path, events: EventRecorder):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_")}
    config = Config({}, {**env, "AIB_CACHE": str(cache), "AIB_HOME": str(tmp_path / "home")})
    return make_run_context(tmp_path, config=config, emit=events)


async def test_bootstrap_builds_a_bios_grub_disk_and_caches_it(tmp_path: Path, cache: Path) -> None:
    events = EventRecorder()
    spec = PlatformImageSource.model_validate(SPEC)
    image = await DebianPlatformSource().resolve(spec, _ctx(tmp_path, cache, events))

    assert image.format == "qcow2" and image.access == "cloud-init" and image.hyper_v_generation == "V1"
    assert image.exact_version and len(image.exact_version) == 16 and image.exact_version.endswith("Z")
    assert image.path.is_relative_to(cache / "debian")
    logs = [e for e in events.of_kind(LogLine) if e.source == "debian-bootstrap"]
    assert any(line.line.startswith("I: Base system installed successfully") for line in logs)
    steps = [p for p in events.of_kind(Progress) if p.task == "debian-bootstrap"]
    assert steps and all(p.unit == "steps" for p in steps) and (steps[-1].done, steps[-1].total) == (4, 4)
    assert not list((cache / "debian").glob(".work-*"))  # the work tree is gone

    raw = tmp_path / "disk.raw"
    await anyio.run_process(["qemu-img", "convert", "-O", "raw", str(image.path), str(raw)])
    with raw.open("rb") as fh:
        mbr, sector1 = fh.read(512), fh.read(512)
    boot_img = (GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    diskboot = (GRUB_LIB / "i386-pc" / "diskboot.img").read_bytes()
    assert mbr[510:512] == b"\x55\xaa"
    assert mbr[:440] == boot_img[:440]  # GRUB's boot code in the MBR
    assert sector1[:256] == diskboot[:256]  # GRUB's core image starts right after it
    status, ptype = mbr[446], mbr[446 + 4]
    start, sectors = struct.unpack_from("<II", mbr, 446 + 8)
    assert (status, ptype, start) == (0x80, 0x83, 2048)
    assert (start + sectors) * 512 == raw.stat().st_size

    offset = start * 512
    for path in ("/usr/bin/cloud-init", "/usr/sbin/sshd", "/usr/bin/sudo", "/vmlinuz", "/initrd.img"):
        assert "Type: regular" in _debugfs(raw, offset, f"stat {path}") or "Type: symlink" in _debugfs(
            raw, offset, f"stat {path}"
        ), path
    assert "NoCloud" in _debugfs(raw, offset, "cat /etc/cloud/cloud.cfg.d/90_aib_sdk.cfg")
    assert image.attributes["fsUuid"] in _debugfs(raw, offset, "cat /etc/fstab")
    assert "ssh_host_" not in _debugfs(raw, offset, "ls /etc/ssh")  # each instance gets its own host keys
    assert f"root=UUID={image.attributes['fsUuid']}" in _debugfs(raw, offset, "cat /boot/grub/grub.cfg")

    # A second resolve reuses the cached disk.
    again_events = EventRecorder()
    started = time.monotonic()
    again = await DebianPlatformSource().resolve(spec, _ctx(tmp_path, cache, again_events))
    assert time.monotonic() - started < 10
    assert (again.path, again.sha256, again.exact_version) == (image.path, image.sha256, image.exact_version)
    assert any("using cached" in e.line for e in again_events.of_kind(LogLine))

    # An explicit version must be the mirror's: the same date is accepted, another one is refused.
    dated = PlatformImageSource.model_validate({**SPEC, "version": image.exact_version[:8]})
    assert (await DebianPlatformSource().resolve(dated, _ctx(tmp_path, cache, EventRecorder()))).path == image.path
    with pytest.raises(SourceError, match="not available"):
        old = PlatformImageSource.model_validate({**SPEC, "version": "2001-01-01"})
        await DebianPlatformSource().resolve(old, _ctx(tmp_path, cache, EventRecorder()))


async def test_the_debian_image_boots_to_ssh_with_sudo(tmp_path: Path, cache: Path) -> None:
    from aib_provider_qemu.host import QemuBuildHost

    events = EventRecorder()
    ctx = _ctx(tmp_path, cache, events)
    image = await DebianPlatformSource().resolve(PlatformImageSource.model_validate(SPEC), ctx)
    async with QemuBuildHost().start(image, VmRequest(vm_size="Standard_D2s_v3"), ctx) as machine:
        result = await machine.communicator.run(
            "id -un; sudo -n id -u; test -x /usr/bin/cloud-init && echo cloud-init; "
            "sudo -n test -e /run/aib-agent/active && echo agent; test -e /var/lib/cloud && echo cloud-init-ran; "
            "cat /etc/debian_version",
            timeout=120,
        )
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.split()
        assert lines[1] == "0" and "cloud-init" in lines and lines[-1].startswith("12.")
        assert lines[0] != "root"
        # The build boot was provisioned by the image's agent: cloud-init did not run and left no state behind.
        assert "agent" in lines and "cloud-init-ran" not in lines
        await machine.shutdown()
    assert any(READY_LINE in e.line for e in events.of_kind(LogLine) if e.source == "serial")


async def test_gen2_sku_is_a_uefi_disk_that_boots_with_ovmf(tmp_path: Path, cache: Path) -> None:
    from aib_provider_qemu.host import QemuBuildHost

    ctx = _ctx(tmp_path, cache, EventRecorder())
    image = await DebianPlatformSource().resolve(PlatformImageSource.model_validate({**SPEC, "sku": "12-gen2"}), ctx)
    assert image.hyper_v_generation == "V2" and image.attributes["firmware"] == "uefi"

    raw = tmp_path / "gen2.raw"
    await anyio.run_process(["qemu-img", "convert", "-O", "raw", str(image.path), str(raw)])
    table = await anyio.run_process(["sfdisk", "--json", str(raw)])
    esp, root = json.loads(table.stdout)["partitiontable"]["partitions"]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    mdir = await anyio.run_process(
        ["mdir", "-b", "-i", f"{raw}@@{esp['start'] * 512}", "::/EFI/BOOT"],
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    assert "BOOTX64.EFI" in mdir.stdout.decode().upper()
    assert "Type: regular" in _debugfs(raw, root["start"] * 512, "stat /usr/bin/cloud-init")

    async with QemuBuildHost().start(image, VmRequest(vm_size="Standard_D2s_v3"), ctx) as machine:
        result = await machine.communicator.run(
            "test -d /sys/firmware/efi && echo booted-uefi; sudo -n true", timeout=120
        )
        assert result.exit_code == 0 and "booted-uefi" in result.stdout
        await machine.shutdown()
