"""Gallery claims and crashes: a claim is never ownerless, and aib gc removes a dead run's unfinished claim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

import aib_provider_local_gallery.hooks as hooks
from aib_provider_local_gallery.distributors import LocalSharedImageDistributor
from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef
from aib_provider_local_gallery.manifest import DefinitionRecord
from aib_sdk.gc import collect_garbage
from aib_sdk.journal import JOURNAL_NAME, Journal, Owner, process_start_time, read_journal
from aib_sdk.models.specs import SharedImageDistributor
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
            publisher="a",
            offer="b",
            sku="c",
        )
    )


async def dead_owner() -> Owner:
    async with await anyio.open_process(["sleep", "5"]) as proc:
        start = process_start_time(proc.pid)
        proc.kill()
        await proc.wait()
    me = Owner.current()
    return Owner(proc.pid, start, me.boot, me.host)


def spec(version: str) -> SharedImageDistributor:
    return SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": f"{DEF_ID}/versions/{version}"}
    )


async def test_a_claim_killed_between_mkdir_and_owner_file_is_reclaimed(gallery: Any, small_qcow2: Path) -> None:
    define(gallery)
    ref = GalleryImageRef("rg", "gal", "linux", "1.0.0")
    gallery.store.path_of(ref).mkdir(parents=True)  # what an older claim left when killed right after mkdir
    await LocalSharedImageDistributor().publish(gallery.artifact_of(small_qcow2), spec("1.0.0"), gallery.ctx())
    assert gallery.store.get_image(ref).name == "1.0.0"
    claim = gallery.store.claim(GalleryImageRef("rg", "gal", "linux", "2.0.0"), "run-x", ["local"])
    owner = json.loads((claim.directory / ".owner.json").read_text())
    assert owner["start"] == Owner.current().start and owner["token"] == claim.token  # never ownerless
    assert not list(claim.directory.parent.glob(".claim-*"))


async def test_publish_journals_its_claim_and_releases_it(gallery: Any, small_qcow2: Path) -> None:
    define(gallery)
    ctx = gallery.ctx()
    ctx.journal = Journal.create(ctx.staging.run_directory, run_id=ctx.run_id, template_name="t")
    await LocalSharedImageDistributor().publish(gallery.artifact_of(small_qcow2), spec("1.0.0"), ctx)
    state = read_journal(ctx.staging.run_directory / JOURNAL_NAME)
    assert [e.kind for e in state.entries.values()] == ["local-gallery.claim"] and not state.open_entries


async def test_gc_removes_a_dead_runs_claim_and_only_that(gallery: Any, small_qcow2: Path) -> None:
    define(gallery)
    store = gallery.store
    mine, other, done = (GalleryImageRef("rg", "gal", "linux", v) for v in ("1.0.0", "1.0.1", "1.0.2"))
    ctx = gallery.ctx()
    owner = await dead_owner()
    journal = Journal(ctx.staging.run_directory / JOURNAL_NAME)
    journal.append({"op": "owner", **owner.to_json(), "runId": ctx.run_id, "templateName": "t"})
    records = []
    for ref in (mine, other, done):
        claim = store.claim(ref, ctx.run_id, ["local"])
        region = store.region_path("local", ref)
        region.mkdir(parents=True)
        (region / ".pending-x.qcow2").write_bytes(b"partial")
        data = {"directory": str(claim.directory), "token": claim.token, "regionDirectories": [str(region)]}
        records.append((claim, data))
    # "other" was really taken by another (live) run: this run's journal has a token that never got it
    records[1] = (records[1][0], {**records[1][1], "token": "not-ours"})
    # "done" was committed before the builder died
    await anyio.to_thread.run_sync(lambda: (records[2][0].directory / "manifest.json").write_text("{}"))
    for claim, data in records:
        journal.acquire_sync("local-gallery.claim", data, f"gallery claim on {claim.ref.id}")
    plugins = PluginManager(entry_points=False, plugins=[hooks])
    [run] = await collect_garbage(gallery.config, plugins)
    text = "\n".join(run.lines())
    assert run.ok, text
    assert not store.path_of(mine).exists() and not store.region_path("local", mine).exists()
    assert store.path_of(other).exists() and "not held by this run, left alone" in text
    assert store.path_of(done).exists() and "was committed: left in place" in text
    # the version number is free again
    await LocalSharedImageDistributor().publish(gallery.artifact_of(small_qcow2), spec("1.0.0"), gallery.ctx())
