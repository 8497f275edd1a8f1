"""Reflink copies, managed images, stale claims, deletion, and the plugin's registration and routing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

import aib_provider_local_gallery.hooks as hooks
from aib_provider_local_gallery.distributors import LocalManagedImageDistributor, LocalSharedImageDistributor
from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef, ManagedImageRef
from aib_provider_local_gallery.manifest import DefinitionRecord
from aib_provider_local_gallery.sources import LocalManagedImageSource, LocalSharedImageVersionSource
from aib_sdk.artifacts import Artifact, DiskImage
from aib_sdk.errors import ConflictError, SourceError, UsageError
from aib_sdk.models.specs import (
    ManagedImageDistributor,
    ManagedImageSource,
    SharedImageDistributor,
    SharedImageVersionSource,
)
from aib_sdk.plugins.manager import PluginManager

pytestmark = pytest.mark.anyio
RG = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute"
DEF_ID = f"{RG}/galleries/gal/images/linux"


def define(gallery: Any) -> None:
    gallery.store.create_gallery(GalleryRef("rg", "gal"))
    gallery.store.create_definition(
        DefinitionRecord(
            id=DEF_ID,
            name="linux",
            gallery="gal",
            resource_group="rg",
            location="local",
            publisher="acme",
            offer="base",
            sku="one",
        )
    )


def shared_extents(path: Path) -> bool:
    out = subprocess.run(["filefrag", "-v", str(path)], check=True, capture_output=True, text=True).stdout
    return "shared" in out


async def test_reflink_where_the_filesystem_supports_it(gallery: Any, xfs_reflink: Path) -> None:
    """XFS with reflink (a loop mount): the region on it gets a clone; the ext4 home region a real copy."""
    define(gallery)
    image = gallery.make_qcow2(xfs_reflink / "artifact.qcow2", size_mib=32, data_mib=4)
    gallery.map_region("fast", xfs_reflink / "fast")
    spec = SharedImageDistributor.model_validate(
        {
            "type": "SharedImage",
            "runOutputName": "sig",
            "galleryImageId": f"{DEF_ID}/versions/1.0.0",
            "targetRegions": [{"name": "fast"}],
        }
    )
    await LocalSharedImageDistributor().publish(gallery.artifact_of(image), spec, gallery.ctx())
    manifest = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "1.0.0"))
    methods = {r.region: r.method for r in manifest.regions}
    assert methods == {"local": "copy", "fast": "reflink"}
    clone = Path(manifest.regions[1].path)
    assert clone.is_relative_to(xfs_reflink) and shared_extents(clone)
    assert gallery.sha256_of(clone) == manifest.regions[1].sha256 == gallery.sha256_of(image)
    assert not shared_extents(Path(manifest.regions[0].path))


async def test_managed_image_publish_source_and_conflict(gallery: Any, small_qcow2: Path) -> None:
    image_id = f"{RG}/images/web-base"
    spec = ManagedImageDistributor.model_validate(
        {"type": "ManagedImage", "runOutputName": "mi", "imageId": image_id, "location": "eastus"}
    )
    assert LocalManagedImageDistributor.claims(spec, gallery.config)
    out = await LocalManagedImageDistributor().publish(gallery.artifact_of(small_qcow2), spec, gallery.ctx())
    assert out.artifact_id == image_id
    assert out.regions["eastus"].startswith("file:///")
    source = ManagedImageSource.model_validate({"type": "ManagedImage", "imageId": image_id})
    disk = await LocalManagedImageSource().resolve(source, gallery.ctx())
    assert disk.path.is_relative_to(gallery.root / "regions" / "eastus")
    assert disk.sha256 == gallery.sha256_of(small_qcow2) == gallery.sha256_of(disk.path)
    with pytest.raises(ConflictError):
        await LocalManagedImageDistributor().publish(gallery.artifact_of(small_qcow2), spec, gallery.ctx())
    gallery.store.delete(ManagedImageRef("rg", "web-base"))
    assert gallery.files() == []
    with pytest.raises(SourceError, match="does not exist"):
        await LocalManagedImageSource().resolve(source, gallery.ctx())


async def test_boot_facts_travel_with_the_image(gallery: Any, small_qcow2: Path, tmp_path: Path) -> None:
    """An image built from a direct-kernel-boot base (the tiny guest) boots the same way from the gallery."""
    define(gallery)
    kernel = tmp_path / "vmlinuz-cache"
    kernel.write_bytes(b"kernel image")
    artifact = gallery.artifact_of(small_qcow2)
    artifact.source_image = DiskImage(
        path=tmp_path / "base.raw",
        format="raw",
        kernel=kernel,
        kernel_args="console=ttyS0 root=/dev/nvme0n1",
        disk_interface="nvme",
        access="static",
        attributes={"ready_line": "READY"},
    )
    spec = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": f"{DEF_ID}/versions/1.0.0"}
    )
    await LocalSharedImageDistributor().publish(artifact, spec, gallery.ctx())
    kernel.unlink()  # the cache may be cleaned: the gallery keeps its own copy
    source = SharedImageVersionSource.model_validate(
        {"type": "SharedImageVersion", "imageVersionId": f"{DEF_ID}/versions/latest"}
    )
    disk = await LocalSharedImageVersionSource().resolve(source, gallery.ctx())
    assert disk.kernel is not None and disk.kernel.read_bytes() == b"kernel image"
    assert disk.kernel.is_relative_to(gallery.root)
    assert (disk.kernel_args, disk.disk_interface, disk.access) == ("console=ttyS0 root=/dev/nvme0n1", "nvme", "static")
    assert disk.attributes == {"ready_line": "READY"} and disk.initrd is None


async def test_stale_claim_of_a_dead_process_is_reclaimed(gallery: Any, small_qcow2: Path) -> None:
    define(gallery)
    ref = GalleryImageRef("rg", "gal", "linux", "1.0.0")
    claim = gallery.store.claim(ref, "run-a", ["local"])
    with pytest.raises(ConflictError, match="being published"):
        gallery.store.claim(ref, "run-b", ["local"])
    # the claiming process dies (a pid that does not exist), leaving a half-written region copy behind
    owner = json.loads((claim.directory / ".owner.json").read_text())
    async with await anyio.open_process(["true"]) as proc:
        await proc.wait()
    owner["pid"] = proc.pid
    (claim.directory / ".owner.json").write_text(json.dumps(owner))
    leftover = gallery.store.region_path("local", ref) / ".pending-run-a.qcow2"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    spec = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": ref.id}
    )
    await LocalSharedImageDistributor().publish(gallery.artifact_of(small_qcow2), spec, gallery.ctx())
    assert not leftover.exists()
    assert gallery.store.get_image(ref).name == "1.0.0"


async def test_delete_rules(gallery: Any, small_qcow2: Path) -> None:
    define(gallery)
    ref = GalleryImageRef("rg", "gal", "linux", "1.0.0")
    spec = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": ref.id, "targetRegions": [{"name": "eastus"}]}
    )
    await LocalSharedImageDistributor().publish(gallery.artifact_of(small_qcow2), spec, gallery.ctx())
    with pytest.raises(UsageError, match="still holds versions"):
        gallery.store.delete(ref.with_version(None))
    with pytest.raises(UsageError, match="still holds image definitions"):
        gallery.store.delete(GalleryRef("rg", "gal"))
    gallery.store.delete(ref)
    gallery.store.delete(ref.with_version(None))
    gallery.store.delete(GalleryRef("rg", "gal"))
    assert gallery.files() == []


def test_plugin_registers_and_routes_by_id() -> None:
    pm = PluginManager(entry_points=False, plugins=[hooks])
    local = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "a", "galleryImageId": DEF_ID}
    )
    assert pm.distributor_for(local, pm_config()) is LocalSharedImageDistributor
    azure = local.model_copy(update={"gallery_image_id": DEF_ID.replace("/local/", "/0000-1111/")})
    assert not LocalSharedImageDistributor.claims(azure, pm_config())
    managed = ManagedImageSource.model_validate({"type": "ManagedImage", "imageId": f"{RG}/images/x"})
    assert pm.source_for(managed, pm_config()) is LocalManagedImageSource


def pm_config() -> Any:
    from aib_sdk.config import Config

    return Config({}, {})


def test_entry_point_is_installed() -> None:
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="aib_sdk")}
    assert names.get("aib-provider-local-gallery") == "aib_provider_local_gallery.hooks"
    assert shutil.which("qemu-img")


async def test_raw_artifact_is_stored_as_qcow2(gallery: Any, tmp_path: Path) -> None:
    """The gallery stores qcow2: a raw artifact goes through the core's cached ``disks.converted``."""
    define(gallery)
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(16 << 20)
        f.seek(4 << 20)
        f.write(b"gallery" * 1000)
    artifact = Artifact(path=raw, format="raw", virtual_size=16 << 20, sha256=gallery.sha256_of(raw))
    spec = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": DEF_ID}
    )
    await LocalSharedImageDistributor().publish(artifact, spec, gallery.ctx())
    manifest = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "latest"))
    copy = Path(manifest.regions[0].path)
    assert manifest.artifact.format == "qcow2" and manifest.artifact.sha256 == gallery.sha256_of(copy)
    info = await anyio.run_process(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(copy)])
    assert info.returncode == 0
