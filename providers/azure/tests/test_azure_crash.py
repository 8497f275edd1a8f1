"""Crash safety on Azure: conditional creates (``If-None-Match: *``), journaled blobs and resources, and their
release by ``aib gc`` — Azurite for blobs, the ARM test server for Compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aib_provider_azure import hooks
from aib_provider_azure.credentials import StaticTokenCredential
from aib_provider_azure.distributors.managed_image import AzureManagedImage
from aib_provider_azure.distributors.shared_image import AzureSharedImage
from aib_provider_azure.release import blob_record
from aib_provider_azure.settings import AzureSettings, BlobRef
from aib_provider_azure.sharedkey import SharedKeyAuth
from aib_provider_azure.upload import upload_page_blob
from aib_sdk.config import Config
from aib_sdk.errors import ConflictError
from aib_sdk.gc import collect_garbage
from aib_sdk.journal import JOURNAL_NAME, Journal, Owner, process_start_time, read_journal
from aib_sdk.models.specs import ManagedImageDistributor, SharedImageDistributor
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.staging import create_staging

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]
TOKEN = "test-token-not-a-secret"  # the ARM test server's (conftest)

RG = "/subscriptions/0000-1111/resourceGroups/rg1/providers/Microsoft.Compute"
DEFINITION = f"{RG}/galleries/gal1/images/ubuntu"


def created_by_someone_else(arm: Any, path_part: str) -> list[str]:
    """Make the ARM test server create the resource just before this run's PUT arrives (a lost race)."""
    original, raced = arm.handle, []

    def handle(method: str, target: str, headers: dict[str, str], raw: bytes) -> Any:
        if method == "PUT" and path_part in target and not raced:
            raced.append(headers.get("if-none-match", ""))
            arm.add(target.split("?")[0], {"location": "eastus", "tags": {"owner": "other"}, "properties": {}})
        return original(method, target, headers, raw)

    arm.handle = handle
    return raced


async def test_managed_image_race_is_decided_by_the_service(
    azurite, arm, azure_config, make_ctx, small_artifact
) -> None:
    image_id = f"{RG}/images/raced"
    spec = ManagedImageDistributor.model_validate(
        {"type": "ManagedImage", "runOutputName": "mi", "imageId": image_id, "location": "eastus"}
    )
    raced = created_by_someone_else(arm, "/images/raced")
    with pytest.raises(ConflictError, match="already exists"):
        await AzureManagedImage().publish(small_artifact, spec, make_ctx(azure_config))
    assert raced == ["*"]  # the PUT was conditional
    image = arm.resource(image_id)
    assert image is not None and image["tags"] == {"owner": "other"}  # the other run's image is untouched
    assert ("DELETE", image_id) not in arm.state.requests


async def test_gallery_version_race_never_deletes_the_other_runs_version(
    azurite, arm, add_gallery, azure_config, make_ctx, small_artifact
) -> None:
    add_gallery(DEFINITION)
    spec = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": f"{DEFINITION}/versions/1.0.0"}
    )
    raced = created_by_someone_else(arm, "/versions/1.0.0")
    with pytest.raises(ConflictError, match=r"version 1\.0\.0 already exists"):
        await AzureSharedImage().publish(small_artifact, spec, make_ctx(azure_config))
    assert raced == ["*"]
    version = arm.resource(f"{DEFINITION}/versions/1.0.0")
    assert version is not None and version["tags"] == {"owner": "other"}
    assert not [r for r in arm.state.requests if r[0] == "DELETE" and "versions" in r[1]]


async def test_a_successful_publish_leaves_nothing_open_in_the_journal(
    azurite, arm, add_gallery, azure_config, make_ctx, small_artifact, tmp_path: Path
) -> None:
    add_gallery(DEFINITION)
    ctx = make_ctx(azure_config)
    ctx.staging.run_directory.mkdir(parents=True)
    ctx.journal = Journal.create(ctx.staging.run_directory, run_id=ctx.run_id, template_name="t")
    spec = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": DEFINITION}
    )
    await AzureSharedImage().publish(small_artifact, spec, ctx)
    state = read_journal(ctx.staging.run_directory / JOURNAL_NAME)
    assert sorted(e.kind for e in state.entries.values()) == ["azure.blob", "azure.resource"]
    assert not state.open_entries


async def test_gc_deletes_staging_and_partial_blobs_and_only_accepted_resources(
    azurite, arm, azure_config, small_artifact, tmp_path: Path
) -> None:
    config = Config({"azure": azure_config}, {"AIB_HOME": str(tmp_path / "home")})
    settings = AzureSettings.from_config(config)
    account = settings.account("devstoreaccount1")
    staging_blob = BlobRef(account, "aib-staging", "t-run/sig.vhd")
    partial = BlobRef(account, "vhds", "partial.vhd")
    complete = BlobRef(account, "vhds", "complete.vhd")
    vhd = tmp_path / "disk.vhd"
    vhd.write_bytes(b"\1" * 4096)
    async with httpx.AsyncClient() as client:
        from aib_provider_azure.blob import BlobService

        service = BlobService(client)
        for blob in (staging_blob, complete):
            await upload_page_blob(service, vhd, blob)
        await service.ensure_container(account, "vhds")
        await service.create_page_blob(partial, 4096, {"aibcomplete": "false"})
    ours, theirs = f"{RG}/images/ours", f"{RG}/images/theirs"
    for image in (ours, theirs):
        arm.add(image, {"location": "eastus", "properties": {}})

    staging = await create_staging(config, "t", "ab" * 32, "20260101T000000Z-0a0b0c")
    journal = Journal(staging.run_directory / JOURNAL_NAME)
    proc = await anyio.open_process(["true"])
    start = process_start_time(proc.pid)
    await proc.wait()
    me = Owner.current()
    journal.append({"op": "owner", **Owner(proc.pid, start, me.boot, me.host).to_json(), "runId": staging.run_id})
    journal.acquire_sync("azure.blob", blob_record(staging_blob, staging=True), "staging VHD")
    journal.acquire_sync("azure.blob", blob_record(partial, staging=False), "VHD partial")
    journal.acquire_sync("azure.blob", blob_record(complete, staging=False), "VHD complete")
    journal.acquire_sync("azure.resource", {"id": ours, "apiVersion": "2024-03-02", "accepted": True}, "ours")
    journal.acquire_sync("azure.resource", {"id": theirs, "apiVersion": "2024-03-02", "accepted": False}, "theirs")

    plugins = PluginManager(entry_points=False, plugins=[hooks])
    options = BuildOptions(config=config, plugins=plugins, credential=StaticTokenCredential(TOKEN))
    [run] = await collect_garbage(config, plugins, options=options)
    assert run.ok, "\n".join(run.lines())
    text = "\n".join(run.lines())
    assert f"deleted staging blob {staging_blob.url}" in text and f"deleted partial blob {partial.url}" in text
    assert "complete (an output): left in place" in text and f"deleted {ours}" in text
    assert f"{theirs}: not created by this run, left alone" in text
    assert arm.resource(ours) is None and arm.resource(theirs) is not None

    def exists(blob: BlobRef) -> bool:
        auth = SharedKeyAuth(account.name, account.key)
        return httpx.head(blob.url, auth=auth, headers={"x-ms-version": "2021-08-06"}).status_code == 200

    assert not exists(staging_blob) and not exists(partial) and exists(complete)
