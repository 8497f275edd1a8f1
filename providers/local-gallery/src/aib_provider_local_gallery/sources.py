"""Sources from the local gallery: ``SharedImageVersion`` (``latest`` resolved) and ``ManagedImage``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from anyio.to_thread import run_sync
from pydantic import BaseModel

from aib_provider_local_gallery.ids import (
    GalleryImageRef,
    ManagedImageRef,
    parse_gallery_image_id,
    parse_managed_image_id,
)
from aib_provider_local_gallery.manifest import ImageManifest
from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.store import GalleryStore
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.disks import check_self_contained
from aib_sdk.errors import SourceError, UsageError
from aib_sdk.models.specs import ManagedImageSource, SharedImageVersionSource
from aib_sdk.routing import is_local_arm_id


def _disk_image(manifest: ImageManifest, exact_version: str | None) -> DiskImage:
    """The home region's copy of ``manifest`` as a base disk (never modified: build hosts boot overlays)."""
    replica = manifest.replica(manifest.location)
    path = Path(replica.path)
    if not path.is_file():
        raise SourceError(f"{manifest.id}: its {replica.region} copy {path} is missing")
    if path.stat().st_size != replica.size:
        raise SourceError(f"{manifest.id}: its {replica.region} copy {path} has the wrong size")
    boot = manifest.boot or {}
    kernel, initrd = boot.get("kernel"), boot.get("initrd")
    for file in (kernel, initrd):
        if file and not Path(file).is_file():
            raise SourceError(f"{manifest.id}: its boot file {file} is missing")
    return DiskImage(
        path=path,
        format="qcow2",
        os_type=manifest.os_type,
        hyper_v_generation=manifest.hyper_v_generation,
        sha256=replica.sha256,
        exact_version=exact_version,
        kernel=Path(kernel) if kernel else None,
        initrd=Path(initrd) if initrd else None,
        kernel_args=boot.get("kernelArgs"),
        disk_interface=boot.get("diskInterface", "virtio"),
        access=boot.get("access", "cloud-init"),
        attributes=dict(boot.get("attributes", {})),
    )


async def resolve_gallery_version(ref: GalleryImageRef, config: Config) -> DiskImage:
    """Look up a version (``latest`` → the highest not excluded) and return its home-region copy."""
    store = GalleryStore(GallerySettings.from_config(config))

    def lookup() -> DiskImage:
        manifest = store.get_image(ref)  # resolves ``latest``; the manifest's name is the version found
        return _disk_image(manifest, manifest.name)

    try:
        image = await run_sync(lookup)
    except UsageError as exc:
        raise SourceError(str(exc)) from exc
    await check_self_contained(image.path, image.format, what="local gallery version")  # a planted file
    return image


class LocalSharedImageVersionSource:
    """``SharedImageVersion`` with a local ``imageVersionId``."""

    type_name: ClassVar[str] = "SharedImageVersion"
    spec_model: ClassVar[type[BaseModel]] = SharedImageVersionSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return isinstance(spec, SharedImageVersionSource) and is_local_arm_id(spec.image_version_id)

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        assert isinstance(spec, SharedImageVersionSource)
        try:
            ref = parse_gallery_image_id(spec.image_version_id)
        except UsageError as exc:
            raise SourceError(f"imageVersionId: {exc}") from exc
        if not ref.version:
            raise SourceError(f"imageVersionId {spec.image_version_id} names a definition; add /versions/<v|latest>")
        image = await resolve_gallery_version(ref, ctx.config)
        ctx.log("local-gallery", f"source {ref.with_version(image.exact_version).id}")
        return image


class LocalManagedImageSource:
    """``ManagedImage`` with a local ``imageId``."""

    type_name: ClassVar[str] = "ManagedImage"
    spec_model: ClassVar[type[BaseModel]] = ManagedImageSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return isinstance(spec, ManagedImageSource) and is_local_arm_id(spec.image_id)

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        assert isinstance(spec, ManagedImageSource)
        store = GalleryStore(GallerySettings.from_config(ctx.config))
        try:
            ref: ManagedImageRef = parse_managed_image_id(spec.image_id)
            manifest = await run_sync(store.get_image, ref)
            return await run_sync(_disk_image, manifest, None)
        except UsageError as exc:
            raise SourceError(str(exc)) from exc
