"""Bootable disks from a root tree, with no loop device and no mount (this host's kernel may lack both).

- BIOS (Gen1): an MBR label, GRUB's ``boot.img`` in the MBR, ``core.img`` (made by ``grub-mkimage -O i386-pc``
  with an embedded config) in the gap after it, and the ext4 root made by ``mkfs.ext4 -d`` at 1 MiB.
- UEFI (Gen2): a GPT label, an EFI system partition formatted and filled with mtools (``BOOTX64.EFI`` from
  ``grub-mkimage -O x86_64-efi``, the removable-media path OVMF boots), and the same ext4 root.

Both load ``/boot/grub/grub.cfg`` from the root filesystem, which boots ``/vmlinuz`` and ``/initrd.img`` (Debian's
kernel symlinks, so a kernel upgrade in a customizer keeps the disk bootable).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread

from aib_provider_qemu.debian.proc import LineSink, output_of, run_logged
from aib_sdk.errors import SourceError

MiB = 1 << 20
SECTOR = 512
ESP_SIZE = 64 * MiB
GRUB_LIB = Path("/usr/lib/grub")
# GRUB modules both firmwares need: read the ext4 root by UUID, load grub.cfg, boot Linux, serial console.
_COMMON_MODULES = (
    "part_msdos",
    "ext2",
    "search",
    "search_fs_uuid",
    "normal",
    "linux",
    "echo",
    "test",
    "configfile",
    "serial",
    "terminal",
)
BIOS_MODULES = ("biosdisk", *_COMMON_MODULES)
EFI_MODULES = ("part_gpt", "fat", *_COMMON_MODULES, "efi_gop", "all_video")
Firmware = Literal["bios", "uefi"]
GRUB_PLATFORM: dict[Firmware, str] = {"bios": "i386-pc", "uefi": "x86_64-efi"}


@dataclass(frozen=True)
class Partition:
    start: int  # bytes
    size: int  # bytes


def grub_cfg(fs_uuid: str, kernel_args: str) -> str:
    """``/boot/grub/grub.cfg``: serial + screen console, no menu delay, boot Debian's kernel symlinks."""
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=0\n"
        "set default=0\n"
        "menuentry 'Debian GNU/Linux 12 (aib-sdk)' {\n"
        f"    search --no-floppy --fs-uuid --set=root {fs_uuid}\n"
        f"    linux /vmlinuz root=UUID={fs_uuid} ro {kernel_args}\n"
        "    initrd /initrd.img\n"
        "}\n"
    )


def _embedded_cfg(fs_uuid: str) -> str:
    return f"search --no-floppy --fs-uuid --set=root {fs_uuid}\nset prefix=($root)/boot/grub\n"


def install_grub_files(root: Path, fs_uuid: str, kernel_args: str, firmware: Firmware) -> None:
    """Write grub.cfg and GRUB's modules for ``firmware`` into the root tree (sync; call in a worker thread)."""
    grub = root / "boot" / "grub"
    grub.mkdir(parents=True, exist_ok=True)
    (grub / "grub.cfg").write_text(grub_cfg(fs_uuid, kernel_args), encoding="utf-8")
    platform = GRUB_PLATFORM[firmware]
    source = GRUB_LIB / platform
    if not source.is_dir():
        raise SourceError(f"GRUB {platform} files not found in {source}: install {grub_package(firmware)}")
    shutil.copytree(source, grub / platform, dirs_exist_ok=True)


def grub_package(firmware: Firmware) -> str:
    return "grub-pc-bin" if firmware == "bios" else "grub-efi-amd64-bin"


async def _sparse_file(path: Path, size: int) -> None:
    def make() -> None:
        with path.open("wb") as fh:
            fh.truncate(size)

    await anyio.to_thread.run_sync(make)


async def _partitions(disk: Path) -> list[Partition]:
    table = json.loads(await output_of(["sfdisk", "--json", disk]))
    size = int(table["partitiontable"].get("sectorsize", SECTOR))
    return [Partition(p["start"] * size, p["size"] * size) for p in table["partitiontable"]["partitions"]]


async def _sfdisk(disk: Path, script: str, log: LineSink) -> None:
    result = await anyio.run_process(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)], input=script.encode(), check=False
    )
    if result.returncode != 0:
        raise SourceError(f"sfdisk failed: {result.stderr.decode(errors='replace').strip()}")
    log(f"partitioned {disk.name}: {script.strip().splitlines()[0]}")


async def _mkfs_ext4(root: Path, disk: Path, part: Partition, fs_uuid: str, log: LineSink) -> None:
    await run_logged(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "aib-root",
            "-U",
            fs_uuid,
            "-d",
            root,
            "-E",
            f"offset={part.start},root_owner=0:0",
            disk,
            f"{part.size // 1024}k",
        ],
        log,
        what="mkfs.ext4",
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)


async def make_bios_disk(root: Path, disk: Path, size: int, fs_uuid: str, log: LineSink) -> None:
    """A raw BIOS-bootable MBR disk of ``size`` bytes holding ``root`` (whose GRUB files are installed)."""
    work = disk.parent
    core = work / "core.img"
    cfg = work / "embedded.cfg"
    await anyio.Path(cfg).write_text(_embedded_cfg(fs_uuid), encoding="utf-8")
    await run_logged(
        ["grub-mkimage", "-O", GRUB_PLATFORM["bios"], "-p", "/boot/grub", "-c", cfg, "-o", core, *BIOS_MODULES],
        log,
        what="grub-mkimage",
    )
    core_bytes = await anyio.Path(core).read_bytes()
    if len(core_bytes) > MiB - SECTOR:
        raise SourceError(f"GRUB core.img is {len(core_bytes)} bytes and does not fit before the first partition")
    boot = await anyio.Path(GRUB_LIB / GRUB_PLATFORM["bios"] / "boot.img").read_bytes()
    await _sparse_file(disk, size)
    await _sfdisk(disk, "label: dos\nstart=2048, type=83, bootable\n", log)
    (part,) = await _partitions(disk)
    await _mkfs_ext4(root, disk, part, fs_uuid, log)
    await anyio.to_thread.run_sync(_write_at, disk, 0, boot[:440])
    await anyio.to_thread.run_sync(_write_at, disk, SECTOR, core_bytes)
    log(f"installed GRUB (BIOS): boot.img in the MBR, core.img ({len(core_bytes)} bytes) at sector 1")


async def make_uefi_disk(root: Path, disk: Path, size: int, fs_uuid: str, log: LineSink) -> None:
    """A raw UEFI-bootable GPT disk: an ESP made with mtools and the ext4 root (``/boot/grub`` installed)."""
    work = disk.parent
    efi = work / "BOOTX64.EFI"
    cfg = work / "embedded.cfg"
    await anyio.Path(cfg).write_text(_embedded_cfg(fs_uuid), encoding="utf-8")
    await run_logged(
        ["grub-mkimage", "-O", GRUB_PLATFORM["uefi"], "-p", "/boot/grub", "-c", cfg, "-o", efi, *EFI_MODULES],
        log,
        what="grub-mkimage",
    )
    await _sparse_file(disk, size)
    esp_sectors = ESP_SIZE // SECTOR
    await _sfdisk(
        disk,
        "label: gpt\n"
        f'start=2048, size={esp_sectors}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI"\n'
        'type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"\n',
        log,
    )
    esp, rootpart = await _partitions(disk)
    image = f"{disk}@@{esp.start}"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MTOOLS_SKIP_CHECK": "1"}
    await run_logged(
        ["mformat", "-i", image, "-T", str(esp.size // SECTOR), "-h", "64", "-s", "32", "-v", "ESP", "::"],
        log,
        what="mformat",
        env=env,
    )
    await run_logged(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], log, what="mmd", env=env)
    await run_logged(["mcopy", "-i", image, efi, "::/EFI/BOOT/BOOTX64.EFI"], log, what="mcopy", env=env)
    await _mkfs_ext4(root, disk, rootpart, fs_uuid, log)
    log("installed GRUB (UEFI): EFI/BOOT/BOOTX64.EFI on a FAT ESP made with mtools")
