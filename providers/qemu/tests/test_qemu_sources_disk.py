"""Bootable disk assembly with the real tools (sfdisk, grub-mkimage, mkfs.ext4 -d, mtools), on a small tree.

No mount and no loop device: the result is read back with sfdisk, mtools and debugfs at the partition offset.
"""

from __future__ import annotations

import json
import struct
import subprocess
import uuid
from pathlib import Path

import anyio
import pytest

from aib_provider_qemu.debian import disk
from aib_provider_qemu.debian.proc import run_logged
from aib_provider_qemu.debian.source import remove_tree
from aib_sdk.errors import SourceError

pytestmark = pytest.mark.anyio
SIZE = 160 << 20


def _tree(root: Path) -> None:
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-test").write_bytes(b"not really a kernel")
    (root / "vmlinuz").symlink_to("boot/vmlinuz-test")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("debian\n")


def _debugfs(raw: Path, offset: int, request: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", request, f"{raw}?offset={offset}"], capture_output=True, text=True, check=True
    ).stdout


def _partitions(raw: Path) -> dict[str, object]:
    out = subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True, check=True).stdout
    table: dict[str, object] = json.loads(out)["partitiontable"]
    return table


async def test_bios_disk_layout(tmp_path: Path) -> None:
    root, raw, fs_uuid = tmp_path / "root", tmp_path / "work" / "disk.raw", str(uuid.uuid4())
    _tree(root)
    raw.parent.mkdir()
    await anyio.to_thread.run_sync(disk.install_grub_files, root, fs_uuid, "console=ttyS0", "bios")
    lines: list[str] = []
    await disk.make_bios_disk(root, raw, SIZE, fs_uuid, lines.append)

    table = _partitions(raw)
    assert table["label"] == "dos"
    (part,) = table["partitions"]  # type: ignore[misc]
    assert part["start"] == 2048 and part.get("bootable") is True
    mbr = raw.read_bytes()[:1024]
    assert mbr[:440] == (disk.GRUB_LIB / "i386-pc" / "boot.img").read_bytes()[:440]
    assert mbr[512:768] == (disk.GRUB_LIB / "i386-pc" / "diskboot.img").read_bytes()[:256]
    assert struct.unpack_from("<I", mbr, 446 + 8)[0] == 2048
    offset = 2048 * 512
    assert "UUID" in _debugfs(raw, offset, "stats") and fs_uuid in _debugfs(raw, offset, "stats")
    assert _debugfs(raw, offset, "cat /etc/hostname") == "debian\n"
    cfg = _debugfs(raw, offset, "cat /boot/grub/grub.cfg")
    assert f"linux /vmlinuz root=UUID={fs_uuid} ro console=ttyS0" in cfg
    assert "Type: regular" in _debugfs(raw, offset, "stat /boot/grub/i386-pc/normal.mod")
    assert any("core.img" in line for line in lines)


async def test_uefi_disk_has_an_esp_made_with_mtools(tmp_path: Path) -> None:
    if not (disk.GRUB_LIB / "x86_64-efi").is_dir():
        pytest.fail("grub-efi-amd64-bin is not installed (providers/qemu/apt-packages-debian.txt lists it)")
    root, raw, fs_uuid = tmp_path / "root", tmp_path / "work" / "disk.raw", str(uuid.uuid4())
    _tree(root)
    raw.parent.mkdir()
    await anyio.to_thread.run_sync(disk.install_grub_files, root, fs_uuid, "console=ttyS0", "uefi")
    await disk.make_uefi_disk(root, raw, SIZE, fs_uuid, lambda line: None)

    table = _partitions(raw)
    assert table["label"] == "gpt"
    esp, rootpart = table["partitions"]  # type: ignore[misc]
    assert esp["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert esp["size"] * 512 == disk.ESP_SIZE
    mdir = await anyio.run_process(
        ["mdir", "-i", f"{raw}@@{esp['start'] * 512}", "-b", "::/EFI/BOOT"],
        env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )
    listing = mdir.stdout.decode()
    assert "BOOTX64.EFI" in listing.upper()
    offset = rootpart["start"] * 512
    assert fs_uuid in _debugfs(raw, offset, "stats")
    assert "Type: regular" in _debugfs(raw, offset, "stat /boot/grub/x86_64-efi/normal.mod")


async def test_failing_command_reports_its_last_lines_and_work_trees_are_removed(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(SourceError) as info:
        await run_logged(["sh", "-c", "echo first; echo second >&2; exit 3"], lines.append, what="demo")
    assert "exit code 3" in str(info.value) and "second" in str(info.value)
    assert lines == ["first", "second"]

    work = tmp_path / ".work-x"
    (work / "root" / "etc").mkdir(parents=True)
    (work / "root" / "etc" / "f").write_text("x")
    await remove_tree(work)
    assert not work.exists()
