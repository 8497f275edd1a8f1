"""Publishing into the local gallery: regions, verification, versioning, conflicts, failures and cancellation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from aib_provider_local_gallery.distributors import LocalSharedImageDistributor
from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef
from aib_provider_local_gallery.manifest import DefinitionRecord
from aib_provider_local_gallery.sources import LocalSharedImageVersionSource
from aib_sdk.artifacts import DiskImage
from aib_sdk.errors import ConflictError, DistributeError
from aib_sdk.events import Progress, TargetStatus
from aib_sdk.models.specs import SharedImageDistributor, SharedImageVersionSource

pytestmark = pytest.mark.anyio
GalleryEnv = Any  # the ``gallery`` fixture (conftest.GalleryEnv)
DEF_ID = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/gal/images/linux"


def define(gallery: GalleryEnv, location: str = "local") -> None:
    store = gallery.store
    store.create_gallery(GalleryRef("rg", "gal"), location)
    store.create_definition(
        DefinitionRecord(
            id=DEF_ID,
            name="linux",
            gallery="gal",
            resource_group="rg",
            location=location,
            publisher="acme",
            offer="base",
            sku="one",
        )
    )


def target(**fields: Any) -> SharedImageDistributor:
    data = {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": DEF_ID, **fields}
    return SharedImageDistributor.model_validate(data)


async def publish(gallery: GalleryEnv, image: Path, spec: SharedImageDistributor, **kwargs: Any) -> str:
    ctx = gallery.ctx(**kwargs.pop("options", {}))
    out = await LocalSharedImageDistributor().publish(gallery.artifact_of(image, **kwargs), spec, ctx)
    assert out.artifact_id is not None
    return out.artifact_id


def allowed_files(gallery: GalleryEnv) -> list[Path]:
    return [
        gallery.root / "resourceGroups/rg/galleries/gal/gallery.json",
        gallery.root / "resourceGroups/rg/galleries/gal/images/linux/definition.json",
    ]


async def test_replicates_to_three_regions_concurrently_and_verified(gallery: GalleryEnv, big_qcow2: Path) -> None:
    small_qcow2 = big_qcow2
    define(gallery)
    gallery.map_region("westeurope", gallery.tmp_path / "we")
    spec = target(
        targetRegions=[
            {"name": "westeurope", "replicaCount": 2},
            {"name": "eastus", "storageAccountType": "Premium_LRS"},
        ],
        artifactTags={"team": "infra"},
        versioning={"scheme": "Latest", "major": 3},
    )
    artifact_id = await publish(gallery, small_qcow2, spec)
    assert artifact_id == f"{DEF_ID}/versions/3.0.1"

    manifest = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "3.0.1"))
    assert [r.region for r in manifest.regions] == ["local", "westeurope", "eastus"]  # home region first
    assert manifest.artifact_tags == {"team": "infra"}
    assert [r.replica_count for r in manifest.regions] == [1, 2, 1]
    assert manifest.regions[2].storage_account_type == "Premium_LRS"
    digest = gallery.sha256_of(small_qcow2)
    assert manifest.artifact.sha256 == digest
    for replica in manifest.regions:
        copy = Path(replica.path)
        assert replica.sha256 == digest == gallery.sha256_of(copy)
        assert replica.method == "copy"  # ext4: no reflink
        # sparse-preserving: the copy allocates about what the source does, far less than its size
        assert copy.stat().st_blocks * 512 <= small_qcow2.stat().st_blocks * 512 + (1 << 20)
        assert copy.stat().st_blocks * 512 < copy.stat().st_size / 4
    assert Path(manifest.regions[1].path).is_relative_to(gallery.tmp_path / "we")
    assert Path(manifest.regions[2].path).is_relative_to(gallery.root / "regions" / "eastus")

    progress = [e for e in gallery.events.events if isinstance(e, Progress) and e.task == "replicate"]
    regions_in_order = [e.region for e in progress]
    assert {e.target for e in progress} == {"sig"}
    for region in ("local", "westeurope", "eastus"):
        last = [e for e in progress if e.region == region][-1]
        assert last.done == last.total == small_qcow2.stat().st_size
    # concurrent: every region reports partial progress before any region is complete
    first_done = min(i for i, e in enumerate(progress) if e.done == e.total)
    partial = [e.region for e in progress[:first_done] if 0 < e.done < e.total]
    assert set(partial) == {"local", "westeurope", "eastus"}, regions_in_order
    statuses = [(e.region, e.state) for e in gallery.events.events if isinstance(e, TargetStatus)]
    for region in ("local", "westeurope", "eastus"):
        assert [s for r, s in statuses if r == region] == ["Running", "Succeeded"]
    assert all(not p.name.startswith(".") for p in gallery.files() if p.name != ".owner.json")
    assert not [p for p in gallery.files() if p.name.startswith(".")]


async def test_shallow_replication_references_the_primary_copy(gallery: GalleryEnv, small_qcow2: Path) -> None:
    """``replicationMode: Shallow`` (AIB 2025-10-01): one copy in the primary region; the others are recorded as
    references to it in the version's manifest, with their replicaCount. ``Full`` (the default) copies."""
    define(gallery)
    regions = [{"name": "westeurope", "replicaCount": 3}, {"name": "eastus"}, {"name": "westus2"}]
    shallow = target(galleryImageId=f"{DEF_ID}/versions/1.0.0", targetRegions=regions, replicationMode="Shallow")
    await publish(gallery, small_qcow2, shallow)
    manifest = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "1.0.0"))
    assert manifest.replication_mode == "Shallow"
    primary, *others = manifest.regions
    assert [r.region for r in manifest.regions] == ["local", "westeurope", "eastus", "westus2"]
    assert primary.method == "copy" and Path(primary.path).is_relative_to(gallery.root / "regions" / "local")
    assert [(r.method, r.path, r.sha256) for r in others] == [("reference", primary.path, primary.sha256)] * 3
    assert [r.replica_count for r in manifest.regions] == [1, 3, 1, 1]
    assert not (gallery.root / "regions" / "eastus").exists()  # nothing copied outside the primary region
    statuses = [(e.region, e.state) for e in gallery.events.events if isinstance(e, TargetStatus) and e.region]
    assert ("westus2", "Succeeded") in statuses
    source = LocalSharedImageVersionSource()
    spec = SharedImageVersionSource.model_validate(
        {"type": "SharedImageVersion", "imageVersionId": f"{DEF_ID}/versions/1.0.0"}
    )
    assert (await source.resolve(spec, gallery.ctx())).sha256 == gallery.sha256_of(small_qcow2)

    full = target(galleryImageId=f"{DEF_ID}/versions/1.0.1", targetRegions=regions, replicationMode="Full")
    await publish(gallery, small_qcow2, full)
    copied = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "1.0.1"))
    assert copied.replication_mode == "Full" and {r.method for r in copied.regions} == {"copy"}
    assert len({r.path for r in copied.regions}) == 4
    gallery.store.delete(GalleryImageRef("rg", "gal", "linux", "1.0.0"))  # the shallow version goes cleanly
    assert gallery.sha256_of(Path(copied.regions[0].path)) == gallery.sha256_of(small_qcow2)


async def test_replication_regions_and_explicit_version_conflict(gallery: GalleryEnv, small_qcow2: Path) -> None:
    define(gallery)
    spec = target(
        galleryImageId=f"{DEF_ID}/versions/1.0.0",
        replicationRegions=["local", "northeurope"],
        storageAccountType="Standard_ZRS",
    )
    assert await publish(gallery, small_qcow2, spec) == f"{DEF_ID}/versions/1.0.0"
    manifest = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "1.0.0"))
    assert [(r.region, r.storage_account_type) for r in manifest.regions] == [
        ("local", "Standard_ZRS"),
        ("northeurope", "Standard_ZRS"),
    ]
    before = gallery.files()
    with pytest.raises(ConflictError, match="already exists"):
        await publish(gallery, small_qcow2, spec)
    assert gallery.files() == before
    with pytest.raises(DistributeError, match="mutually exclusive"):
        # the template model refuses this too; the distributor does not rely on it
        both = target(targetRegions=[{"name": "a"}]).model_copy(update={"replication_regions": ["b"]})
        await publish(gallery, small_qcow2, both)


async def test_versioning_reference_example_and_source_scheme(gallery: GalleryEnv, tmp_path: Path) -> None:
    define(gallery)
    image = gallery.make_qcow2(tmp_path / "tiny.qcow2", size_mib=4, data_mib=1)
    for version in ["0.1.1", "0.1.2", "1.0.0", "1.2.0", "2.0.0", "2.1.0"]:
        await publish(gallery, image, target(galleryImageId=f"{DEF_ID}/versions/{version}"))
    assert (await publish(gallery, image, target(versioning={"scheme": "Latest", "major": 1}))).endswith("/1.2.1")
    assert (await publish(gallery, image, target(versioning={"scheme": "Latest", "major": 0}))).endswith("/0.1.3")
    assert (await publish(gallery, image, target(versioning={"scheme": "Latest"}))).endswith("/2.1.1")
    assert (await publish(gallery, image, target())).endswith("/2.1.2")  # no versioning: Latest
    assert (await publish(gallery, image, target(versioning={"scheme": "Source"}), source_version="7.3.1")).endswith(
        "/7.3.1"
    )
    with pytest.raises(DistributeError, match="not a gallery version"):
        await publish(gallery, image, target(versioning={"scheme": "Source"}), source_version="20241105")


async def test_exclude_from_latest_and_source_resolution(gallery: GalleryEnv, tmp_path: Path) -> None:
    define(gallery)
    v1 = gallery.make_qcow2(tmp_path / "v1.qcow2", size_mib=4, data_mib=1, seed=1)
    v2 = gallery.make_qcow2(tmp_path / "v2.qcow2", size_mib=4, data_mib=1, seed=2)
    await publish(gallery, v1, target(galleryImageId=f"{DEF_ID}/versions/1.0.0"))
    await publish(
        gallery,
        v2,
        target(galleryImageId=f"{DEF_ID}/versions/1.1.0", excludeFromLatest=True, targetRegions=[{"name": "eastus"}]),
    )
    source = LocalSharedImageVersionSource()
    spec = SharedImageVersionSource.model_validate(
        {"type": "SharedImageVersion", "imageVersionId": f"{DEF_ID}/versions/latest"}
    )
    assert LocalSharedImageVersionSource.claims(spec, gallery.config)
    image = await source.resolve(spec, gallery.ctx())
    assert image.exact_version == "1.0.0"
    assert image.format == "qcow2" and image.sha256 == gallery.sha256_of(v1) == gallery.sha256_of(image.path)
    assert image.path.is_relative_to(gallery.root / "regions" / "local")  # the home region's copy
    explicit = SharedImageVersionSource.model_validate(
        {"type": "SharedImageVersion", "imageVersionId": f"{DEF_ID}/versions/1.1.0"}
    )
    assert (await source.resolve(explicit, gallery.ctx())).sha256 == gallery.sha256_of(v2)
    # the next Latest version counts excluded ones too, so it never collides
    assert (await publish(gallery, v2, target())).endswith("/1.1.1")
    assert (await source.resolve(spec, gallery.ctx())).exact_version == "1.1.1"


async def test_two_publishers_race_for_one_version(gallery: GalleryEnv, tmp_path: Path) -> None:
    define(gallery)
    images = [gallery.make_qcow2(tmp_path / f"r{i}.qcow2", size_mib=16, data_mib=4, seed=10 + i) for i in range(2)]
    spec = target(galleryImageId=f"{DEF_ID}/versions/1.0.0", targetRegions=[{"name": "a"}, {"name": "b"}])
    results: list[str | BaseException] = [""] * 2

    async def one(i: int) -> None:
        try:
            results[i] = await publish(gallery, images[i], spec)
        except ConflictError as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, 0)
        tg.start_soon(one, 1)
    errors = [r for r in results if isinstance(r, ConflictError)]
    assert len(errors) == 1, results
    winner = 0 if not isinstance(results[0], BaseException) else 1
    manifest = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "1.0.0"))
    assert manifest.artifact.sha256 == gallery.sha256_of(images[winner])
    for replica in manifest.regions:
        assert gallery.sha256_of(Path(replica.path)) == gallery.sha256_of(images[winner])
    disks = [p for p in gallery.files() if p.suffix == ".qcow2"]
    assert sorted(disks) == sorted(Path(r.path) for r in manifest.regions)
    assert not [p for p in gallery.files() if p.name.startswith(".")]


async def test_failure_mid_replication_leaves_nothing(gallery: GalleryEnv, tmp_path: Path, tmpfs: Any) -> None:
    define(gallery)
    image = gallery.make_qcow2(tmp_path / "big.qcow2", size_mib=32, data_mib=8)
    gallery.map_region("tiny", tmpfs("tinyfs", 2048))  # 2 MiB: runs out of space mid-copy
    spec = target(
        galleryImageId=f"{DEF_ID}/versions/1.0.0",
        targetRegions=[{"name": "eastus"}, {"name": "tiny"}, {"name": "westus"}],
    )
    with pytest.raises(DistributeError, match="region tiny") as info:
        await publish(gallery, image, spec)
    assert "No space left" in str(info.value)  # so it failed while copying, after 2 MiB were written
    final = {e.region: e.state for e in gallery.events.events if isinstance(e, TargetStatus)}
    assert final == {"local": "Failed", "eastus": "Failed", "tiny": "Failed", "westus": "Failed"}
    assert gallery.store.versions(GalleryImageRef("rg", "gal", "linux")) == []
    assert gallery.files() == allowed_files(gallery)
    assert os.listdir(gallery.tmp_path / "tinyfs") == []
    # the version can be published afterwards
    gallery.data["local-gallery"]["regions"].pop("tiny")
    await publish(gallery, image, target(galleryImageId=f"{DEF_ID}/versions/1.0.0"))


async def test_cancel_mid_replication_leaves_nothing(gallery: GalleryEnv, big_qcow2: Path) -> None:
    define(gallery)
    image = big_qcow2
    spec = target(galleryImageId=f"{DEF_ID}/versions/1.0.0", targetRegions=[{"name": "a"}, {"name": "b"}])
    ctx = gallery.ctx()
    seen: list[Progress] = []
    with anyio.CancelScope() as scope:

        def on_event(event: Any) -> None:
            gallery.events(event)
            if isinstance(event, Progress) and event.region == "b" and 0 < event.done < (event.total or 0):
                seen.append(event)
                scope.cancel()

        ctx.emit = on_event
        await LocalSharedImageDistributor().publish(gallery.artifact_of(image), spec, ctx)
    assert scope.cancelled_caught
    assert 0 < seen[-1].done < image.stat().st_size
    final = {e.region: e.state for e in gallery.events.events if isinstance(e, TargetStatus)}
    assert final == {"local": "Canceled", "a": "Canceled", "b": "Canceled"}
    assert gallery.store.versions(GalleryImageRef("rg", "gal", "linux")) == []
    assert gallery.files() == allowed_files(gallery)


async def test_corrupted_artifact_is_refused(gallery: GalleryEnv, small_qcow2: Path) -> None:
    define(gallery)
    with pytest.raises(DistributeError, match="the artifact changed"):
        await publish(gallery, small_qcow2, target(), sha256="0" * 64)
    assert gallery.files() == allowed_files(gallery)


async def test_missing_definition_prints_the_command(gallery: GalleryEnv, small_qcow2: Path) -> None:
    spec = target(targetRegions=[{"name": "westeurope"}])
    with pytest.raises(DistributeError) as info:
        await publish(gallery, small_qcow2, spec)
    text = str(info.value)
    assert "aib gallery create gal --resource-group rg" in text
    assert (
        "aib gallery definition create gal linux --resource-group rg --publisher local --offer gal "
        "--sku linux --os-type Linux --os-state Generalized --hyper-v-generation V1"
    ) in text
    assert "--create-missing" in text
    gallery.store.create_gallery(GalleryRef("rg", "gal"))
    with pytest.raises(DistributeError) as info:
        await publish(gallery, small_qcow2, spec)
    assert "aib gallery create" not in str(info.value) and "aib gallery definition create" in str(info.value)
    artifact_id = await publish(gallery, small_qcow2, spec, options={"create_missing": True})
    assert artifact_id == f"{DEF_ID}/versions/0.0.1"
    definition = gallery.store.get_definition(GalleryImageRef("rg", "gal", "linux"))
    assert definition.location == "westeurope"  # the first target region
    assert definition.hyper_v_generation == "V1" and definition.os_type == "Linux"


async def test_preflight_checks_the_definition_before_any_vm_boots(gallery: GalleryEnv, small_qcow2: Path) -> None:
    image = DiskImage(path=small_qcow2, format="qcow2", hyper_v_generation="V2")
    distributor = LocalSharedImageDistributor()
    with pytest.raises(DistributeError, match="aib gallery definition create"):
        await distributor.preflight(target(), image, gallery.ctx())
    await distributor.preflight(target(), image, gallery.ctx(create_missing=True))  # created when publishing
    assert not gallery.store.gallery_exists(GalleryRef("rg", "gal"))
    define(gallery)
    with pytest.raises(DistributeError, match="generation V1; the image is V2"):
        await distributor.preflight(target(), image, gallery.ctx())


async def test_generation_mismatch_is_refused(gallery: GalleryEnv, small_qcow2: Path) -> None:
    define(gallery)
    with pytest.raises(DistributeError, match="generation V1"):
        await publish(gallery, small_qcow2, target(), hyper_v_generation="V2")


async def test_more_regions_than_the_limit_go_in_waves(gallery: GalleryEnv, small_qcow2: Path) -> None:
    define(gallery)
    gallery.data["local-gallery"]["max_parallel_regions"] = 2
    regions = [f"r{i}" for i in range(5)]
    await publish(gallery, small_qcow2, target(targetRegions=[{"name": r} for r in regions]))
    manifest = gallery.store.get_image(GalleryImageRef("rg", "gal", "linux", "latest"))
    assert [r.region for r in manifest.regions] == ["local", *regions]
    digest = gallery.sha256_of(small_qcow2)
    assert all(gallery.sha256_of(Path(r.path)) == digest for r in manifest.regions)
    done = [e.region for e in gallery.events.events if isinstance(e, TargetStatus) and e.state == "Succeeded"]
    assert done == ["local", "r0", "r1", "r2", "r3", "r4"]  # three waves of two, in order
