"""``PlatformImage`` publisher ``Debian``: Debian 12 built locally with debootstrap from the machine's apt mirror.

Azure's names are kept: offer ``debian-12``, sku ``12`` (Gen1, BIOS + GRUB) or ``12-gen2`` (Gen2, UEFI with Debian's
``ovmf``), version ``latest`` or a date. ``exactVersion`` is the date of the mirror's ``bookworm`` Release file
(``20250510T085243Z``). The built disk is cached under ``<cache>/debian/<key>``, where the key digests the release
date, the package list, the firmware and this builder's version, so a second build reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from aib_provider_qemu.debian import agent, disk, mirror, rootfs
from aib_provider_qemu.host import OVMF_CODE, OVMF_VARS
from aib_sdk import disks
from aib_sdk.artifacts import DiskImage
from aib_sdk.bases import SourceBase
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import SourceError
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.runtime import cleanup_scope
from aib_sdk.runtime.download import file_lock as cache_lock

BUILDER_VERSION = "2"
LOG_SOURCE = "debian-bootstrap"
DISK_SIZE = 2 << 30


@dataclass(frozen=True)
class Offer:
    """One sku of the catalogue this source builds."""

    offer: str
    sku: str
    firmware: disk.Firmware

    @property
    def generation(self) -> str:
        return "V1" if self.firmware == "bios" else "V2"


OFFERS: tuple[Offer, ...] = (Offer("debian-12", "12", "bios"), Offer("debian-12", "12-gen2", "uefi"))


def find_offer(spec: PlatformImageSource) -> Offer:
    """The offer/sku the spec names, or a :class:`SourceError` listing what is available."""
    for offer in OFFERS:
        if (spec.offer or "").lower() == offer.offer and (spec.sku or "").lower() == offer.sku:
            return offer
    have = ", ".join(f"{o.offer}/{o.sku}" for o in OFFERS)
    raise SourceError(
        f"PlatformImage Debian {spec.offer}/{spec.sku} is not built locally (available: {have}); "
        "use --source with a disk image for other releases"
    )


def cache_key(exact_version: str, offer: Offer) -> str:
    """Digest of everything that decides the disk's content."""
    data = {
        "builder": BUILDER_VERSION,
        "release": exact_version,
        "suite": rootfs.SUITE,
        "packages": sorted(rootfs.PACKAGES),
        "kernel_args": rootfs.KERNEL_ARGS,
        "cloud_cfg": rootfs.CLOUD_CFG,
        "agent": agent.digest(),
        "firmware": offer.firmware,
        "size": DISK_SIZE,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


def _meta_image(directory: Path) -> DiskImage | None:
    """The cached image in ``directory`` (sync), or None when there is none."""
    meta_file = directory / "meta.json"
    if not meta_file.is_file():
        return None
    meta: dict[str, Any] = json.loads(meta_file.read_text(encoding="utf-8"))
    path = directory / "disk.qcow2"
    if not path.is_file():
        return None
    return DiskImage(
        path=path,
        format="qcow2",
        os_type="Linux",
        hyper_v_generation="V2" if meta["firmware"] == "uefi" else "V1",
        sha256=meta["sha256"],
        exact_version=meta["exactVersion"],
        disk_interface="virtio",
        access="cloud-init",
        attributes={str(k): str(v) for k, v in meta.get("attributes", {}).items()},
    )


TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "grub-mkimage": "grub-pc-bin",
    "qemu-img": "qemu-utils",
}
UEFI_TOOLS: dict[str, str] = {"mformat": "mtools", "mmd": "mtools", "mcopy": "mtools"}


def check_can_build(firmware: disk.Firmware) -> None:
    """Refuse early, naming the Debian packages to install, when this machine cannot build the image."""
    if os.geteuid() != 0:
        raise SourceError("building the Debian base image needs root (debootstrap); run the build as root once")
    tools = TOOLS | (UEFI_TOOLS if firmware == "uefi" else {})
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if not (disk.GRUB_LIB / disk.GRUB_PLATFORM[firmware]).is_dir():
        missing.append(disk.grub_package(firmware))
    if missing:
        raise SourceError(
            f"cannot build the Debian base image: install {', '.join(sorted(set(missing)))} "
            "(apt-get install; listed in providers/qemu/apt-packages-debian.txt)"
        )


def _cached_images(root: Path, offer: Offer) -> list[DiskImage]:
    """The complete cached images of ``offer`` built by this builder, newest first (sync)."""
    found: list[DiskImage] = []
    if not root.is_dir():
        return found
    for directory in root.iterdir():
        if directory.name.startswith(".") or not directory.is_dir():
            continue
        try:
            image = _meta_image(directory)
        except (OSError, ValueError, KeyError):
            continue
        if image is not None and image.exact_version and directory.name == cache_key(image.exact_version, offer):
            found.append(image)
    return sorted(found, key=lambda i: i.exact_version or "", reverse=True)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        points = [line.split()[1].replace("\\040", " ") for line in fh]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


async def remove_tree(path: Path) -> None:
    """Remove a work tree, first unmounting anything an interrupted debootstrap left mounted inside it."""
    if not await anyio.Path(path).exists():
        return
    for point in await anyio.to_thread.run_sync(_mounts_under, path):
        await anyio.run_process(["umount", "-l", point], check=False)
    if await anyio.to_thread.run_sync(_mounts_under, path):
        raise SourceError(f"cannot remove {path}: filesystems are still mounted inside it")
    await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))


class DebianPlatformSource(SourceBase[PlatformImageSource]):
    """Resolves ``PlatformImage`` specs of publisher ``Debian`` by bootstrapping Debian 12."""

    @classmethod
    def accepts(cls, spec: PlatformImageSource, config: Config) -> bool:
        return (spec.publisher or "").lower() == "debian"

    async def resolve(self, spec: PlatformImageSource, ctx: RunContext) -> DiskImage:
        offer = find_offer(spec)
        if offer.firmware == "uefi" and not await anyio.Path(OVMF_CODE).is_file():
            raise SourceError(f"sku {offer.sku} boots with UEFI: install Debian's 'ovmf' package ({OVMF_CODE})")
        requested = (spec.version or "latest").strip()
        root = ctx.cache_dir / "debian"
        latest = requested.lower() == "latest"
        cached_images = await anyio.to_thread.run_sync(_cached_images, root, offer)
        if not latest:
            for image in cached_images:
                if mirror.version_matches(requested, image.exact_version or ""):
                    ctx.log(LOG_SOURCE, f"using cached Debian image {image.exact_version} ({offer.sku})")
                    return image
        source_mirror = await mirror.find_mirror(rootfs.SUITE, ctx.config.get("qemu", "debian_mirror"))
        try:
            release = mirror.release_date(await mirror.fetch_release(source_mirror, rootfs.SUITE))
        except SourceError as exc:
            if latest and cached_images:
                newest = cached_images[0]
                ctx.warn(f"{exc}; using the newest cached Debian image ({newest.exact_version}) instead")
                return newest
            raise
        exact = mirror.version_of(release)
        if not mirror.version_matches(requested, exact):
            raise SourceError(
                f"Debian version {requested!r} is not available: the mirror {source_mirror} serves {rootfs.SUITE} "
                f"as of {exact} (Release date {release:%Y-%m-%d %H:%M:%S} UTC) and no cached image has that "
                f"version; use version 'latest' or {exact!r}"
            )
        key = cache_key(exact, offer)
        cached = await anyio.to_thread.run_sync(_meta_image, root / key)
        if cached is not None:
            ctx.log(LOG_SOURCE, f"using cached Debian image {exact} ({offer.sku}) from {root / key}")
            return cached
        await anyio.Path(root).mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(check_can_build, offer.firmware)
        async with cache_lock(root / f"{key}.lock"):
            cached = await anyio.to_thread.run_sync(_meta_image, root / key)
            if cached is not None:
                return cached
            return await self._build(ctx, root, key, offer, source_mirror, exact)

    async def _build(
        self, ctx: RunContext, root: Path, key: str, offer: Offer, source_mirror: str, exact: str
    ) -> DiskImage:
        def log(line: str) -> None:
            ctx.log(LOG_SOURCE, line)

        work = root / f".work-{key}-{uuid.uuid4().hex[:8]}"
        tree, raw = work / "root", work / "disk.raw"
        started = time.monotonic()
        try:
            await anyio.Path(work).mkdir(parents=True)
            log(f"bootstrapping Debian {rootfs.SUITE} {exact} from {source_mirror} ({len(rootfs.PACKAGES)} packages)")
            label = f"Debian {offer.sku}"

            def phase(done: int, what: str) -> None:
                ctx.progress("debian-bootstrap", label, done, 4, unit="steps")
                if what:
                    log(f"step {done + 1} of 4: {what}")

            phase(0, "debootstrap")
            await rootfs.debootstrap(tree, source_mirror, root / "debs", log)
            actual = await anyio.to_thread.run_sync(rootfs.bootstrapped_version, tree) or exact
            if actual != exact:
                ctx.warn(f"the mirror moved to {actual} during the build; the image records that version")
                exact, key = actual, cache_key(actual, offer)
            fs_uuid = str(uuid.uuid4())
            await anyio.to_thread.run_sync(rootfs.configure, tree, fs_uuid)
            await anyio.to_thread.run_sync(disk.install_grub_files, tree, fs_uuid, rootfs.KERNEL_ARGS, offer.firmware)
            phase(1, "make the disk")
            make = disk.make_bios_disk if offer.firmware == "bios" else disk.make_uefi_disk
            await make(tree, raw, DISK_SIZE, fs_uuid, log)
            await remove_tree(tree)
            phase(2, "compress")
            staged = work / "out"
            await anyio.Path(staged).mkdir()
            await disks.convert(raw, "raw", staged / "disk.qcow2", "qcow2", compression="zstd")
            phase(3, "checksum and record")
            digest = await disks.sha256_file(staged / "disk.qcow2")
            attributes = {
                "firmware": offer.firmware,
                "mirror": source_mirror,
                "fsUuid": fs_uuid,
                "ready_line": agent.READY_LINE,
            }
            if offer.firmware == "uefi":
                attributes |= {"ovmfCode": str(OVMF_CODE), "ovmfVars": str(OVMF_VARS)}
            meta = {
                "publisher": "Debian",
                "offer": offer.offer,
                "sku": offer.sku,
                "exactVersion": exact,
                "firmware": offer.firmware,
                "sha256": digest,
                "packages": list(rootfs.PACKAGES),
                "builder": BUILDER_VERSION,
                "attributes": attributes,
            }
            await anyio.Path(staged / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            final = root / key
            await remove_tree(final)
            await anyio.Path(staged).rename(final)
            phase(4, "")
            log(f"built Debian {exact} ({offer.sku}) in {time.monotonic() - started:.1f} s: {final / 'disk.qcow2'}")
        finally:
            with cleanup_scope(300):
                await remove_tree(work)
        image = await anyio.to_thread.run_sync(_meta_image, final)
        if image is None:
            raise SourceError(f"the Debian image in {final} is incomplete")
        return image
