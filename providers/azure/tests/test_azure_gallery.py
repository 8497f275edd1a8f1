"""ManagedImage and SharedImage end to end: real Azurite for the staging VHD, the ARM test server for Compute."""

from __future__ import annotations

import json
import re

import anyio
import httpx
import pytest

from aib_provider_azure.blob import BlobService
from aib_provider_azure.distributors.managed_image import AzureManagedImage
from aib_provider_azure.distributors.shared_image import AzureSharedImage, next_version
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.sharedkey import SharedKeyAuth
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.errors import ConflictError, DistributeError
from aib_sdk.events import Progress, TargetStatus
from aib_sdk.models.specs import ManagedImageDistributor, SharedImageDistributor

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

RG = "/subscriptions/0000-1111/resourceGroups/rg1/providers/Microsoft.Compute"
GALLERY = f"{RG}/galleries/gal1"
DEFINITION = f"{GALLERY}/images/ubuntu"


def shared_spec(**fields) -> SharedImageDistributor:
    return SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "sig", "galleryImageId": DEFINITION, **fields}
    )


@pytest.fixture
def gallery(arm):
    arm.add(GALLERY, {"location": "eastus"})
    arm.add(
        DEFINITION,
        {
            "location": "eastus",
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "hyperVGeneration": "V2",
                "identifier": {"publisher": "p", "offer": "o", "sku": "s"},
            },
        },
    )
    for version in ("0.1.1", "1.2.0", "2.1.0"):
        arm.add(f"{DEFINITION}/versions/{version}", {"location": "eastus", "properties": {}})
    return arm


async def staging_blobs(azurite, account_name: str = "devstoreaccount1") -> list[str]:
    """Names of the blobs left in an account's staging container (List Blobs over REST)."""
    settings = AzureSettings.from_config(Config({"azure": azurite.config()}, {}))
    account = settings.account(account_name)
    async with httpx.AsyncClient() as client:
        response = await BlobService(client).request(
            "GET",
            account,
            f"{account.blob_endpoint}/aib-staging",
            what="list blobs",
            params={"restype": "container", "comp": "list"},
            ok=(200, 404),
        )
    return re.findall(r"<Name>(.*?)</Name>", response.text)


async def test_managed_image_end_to_end(azurite, arm, azure_config, make_ctx, small_artifact) -> None:
    image_id = f"{RG}/images/web-image"
    spec = ManagedImageDistributor.model_validate(
        {
            "type": "ManagedImage",
            "runOutputName": "mi",
            "imageId": image_id,
            "location": "westus",
            "artifactTags": {"team": "a"},
        }
    )
    config = Config({"azure": azure_config}, {})
    assert AzureManagedImage.claims(spec, config)
    local = spec.model_copy(update={"image_id": image_id.replace("0000-1111", "local")})
    assert not AzureManagedImage.claims(local, config)
    seen_blob: list[str | None] = []
    original = arm.handle
    settings = AzureSettings.from_config(config)

    def spy(method, target, headers, raw):  # the blob must be complete when ARM is asked to read it
        if method == "PUT" and "/images/web-image" in target:
            uri = json.loads(raw)["properties"]["storageProfile"]["osDisk"]["blobUri"]
            ref = settings.parse_blob_uri(uri)
            head = httpx.head(uri, auth=SharedKeyAuth(ref.account.name, ref.account.key))
            seen_blob.append(head.headers.get("x-ms-meta-aibcomplete"))
        return original(method, target, headers, raw)

    arm.handle = spy
    output = await AzureManagedImage().publish(small_artifact, spec, make_ctx(azure_config))
    assert output.artifact_id == image_id
    image = arm.resource(image_id)
    assert image is not None
    props = image["properties"]
    assert props["provisioningState"] == "Succeeded"
    assert props["hyperVGeneration"] == "V2"
    os_disk = props["storageProfile"]["osDisk"]
    assert (os_disk["osType"], os_disk["osState"]) == ("Linux", "Generalized")
    # the VHD was staged in the account mapped to the image's region (westus → aibreplica2)
    assert os_disk["blobUri"].startswith(azurite.endpoint("aibreplica2") + "/aib-staging/azure-test-")
    assert image["location"] == "westus" and image["tags"] == {"team": "a"}
    assert (
        seen_blob == ["true"] and await staging_blobs(azurite, "aibreplica2") == []
    )  # the staging VHD is removed afterwards


async def test_managed_image_existing_is_a_conflict(azurite, arm, azure_config, make_ctx, small_artifact) -> None:
    image_id = f"{RG}/images/taken"
    arm.add(image_id, {"location": "eastus", "properties": {}})
    spec = ManagedImageDistributor.model_validate(
        {"type": "ManagedImage", "runOutputName": "mi", "imageId": image_id, "location": "eastus"}
    )
    with pytest.raises(ConflictError, match="already exists"):
        await AzureManagedImage().publish(small_artifact, spec, make_ctx(azure_config))


async def test_shared_image_version_replicates_to_every_region(
    azurite, gallery, azure_config, make_ctx, events, small_artifact
) -> None:
    gallery.state.replication_polls = 3
    spec = shared_spec(
        targetRegions=[{"name": "eastus", "replicaCount": 2}, {"name": "westus", "storageAccountType": "Standard_ZRS"}],
        versioning={"scheme": "Latest", "major": 1},
        excludeFromLatest=True,
        replicationMode="Shallow",
        artifactTags={"src": "aib"},
    )
    output = await AzureSharedImage().publish(small_artifact, spec, make_ctx(azure_config))
    version_id = f"{DEFINITION}/versions/1.2.1"
    assert output.artifact_id == version_id
    assert set(output.regions) == {"eastus", "westus"}
    version = gallery.resource(version_id)
    assert version is not None and version["properties"]["provisioningState"] == "Succeeded"
    publishing = version["properties"]["publishingProfile"]
    assert publishing["targetRegions"] == [
        {"name": "eastus", "regionalReplicaCount": 2, "storageAccountType": "Standard_LRS"},
        {"name": "westus", "regionalReplicaCount": 1, "storageAccountType": "Standard_ZRS"},
    ]
    assert publishing["excludeFromLatest"] is True and publishing["replicationMode"] == "Shallow"
    source = version["properties"]["storageProfile"]["osDiskImage"]["source"]
    assert source["uri"].startswith(azurite.endpoint("devstoreaccount1") + "/aib-staging/")
    assert source["storageAccountId"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert version["tags"] == {"src": "aib"}
    progress = [(e.region, e.done) for e in events if isinstance(e, Progress) and e.task == "replicate"]
    assert ("westus", 100) in progress and any(r == "westus" and 0 < d < 100 for r, d in progress)
    states = [(e.region, e.state) for e in events if isinstance(e, TargetStatus)]
    assert ("eastus", "Running") in states and ("eastus", "Succeeded") in states
    assert ("westus", "Succeeded") in states
    assert await staging_blobs(azurite) == []


async def test_region_failure_names_the_region_and_removes_the_version(
    azurite, gallery, azure_config, make_ctx, events, small_artifact
) -> None:
    gallery.state.fail_regions = {"westus"}
    spec = shared_spec(targetRegions=[{"name": "eastus"}, {"name": "westus"}])
    with pytest.raises(DistributeError, match="failed in region\\(s\\) westus") as info:
        await AzureSharedImage().publish(small_artifact, spec, make_ctx(azure_config))
    assert "eastus" not in str(info.value).split("region(s)")[1].split("(")[0]
    assert gallery.resource(f"{DEFINITION}/versions/2.1.1") is None  # no half-published version stays
    assert ("westus", "Failed") in [(e.region, e.state) for e in events if isinstance(e, TargetStatus)]
    assert await staging_blobs(azurite) == []


async def test_missing_definition_and_explicit_version_conflict(
    azurite, gallery, azure_config, make_ctx, small_artifact
) -> None:
    missing = shared_spec(galleryImageId=f"{GALLERY}/images/nope")
    with pytest.raises(DistributeError, match=r"image definition .* does not exist"):
        await AzureSharedImage().publish(small_artifact, missing, make_ctx(azure_config))
    taken = shared_spec(galleryImageId=f"{DEFINITION}/versions/2.1.0")
    with pytest.raises(ConflictError, match=r"2\.1\.0 already exists"):
        await AzureSharedImage().publish(small_artifact, taken, make_ctx(azure_config))
    assert not any(m == "PUT" for m, _ in gallery.state.requests)


async def test_preflight_refuses_missing_definitions_and_taken_versions(
    azurite, gallery, azure_config, make_ctx, small_artifact
) -> None:
    image = DiskImage(path=small_artifact.path, format="qcow2")
    ctx = make_ctx(azure_config)
    with pytest.raises(DistributeError, match=r"image definition .* does not exist"):
        await AzureSharedImage().preflight(shared_spec(galleryImageId=f"{GALLERY}/images/nope"), image, ctx)
    with pytest.raises(ConflictError, match=r"2\.1\.0 already exists"):
        await AzureSharedImage().preflight(shared_spec(galleryImageId=f"{DEFINITION}/versions/2.1.0"), image, ctx)
    await AzureSharedImage().preflight(shared_spec(galleryImageId=f"{DEFINITION}/versions/9.9.9"), image, ctx)
    assert not any(m == "PUT" for m, _ in gallery.state.requests)


async def test_cancel_during_replication_removes_the_version(
    azurite, gallery, azure_config, make_ctx, small_artifact
) -> None:
    gallery.state.replication_polls = 10_000
    spec = shared_spec(galleryImageId=f"{DEFINITION}/versions/3.0.0")
    version_id = f"{DEFINITION}/versions/3.0.0"
    with anyio.move_on_after(60) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(AzureSharedImage().publish, small_artifact, spec, make_ctx(azure_config))
            for _ in range(1200):  # wait until the version exists and replication is under way
                if gallery.resource(version_id) is not None:
                    break
                await anyio.sleep(0.05)
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert gallery.resource(version_id) is None
    assert await staging_blobs(azurite) == []


def test_latest_versioning_follows_aib_examples() -> None:
    existing = ["0.1.1", "1.2.0", "2.1.0", "1.0.5", "latest-ish"]
    assert next_version(existing) == "2.1.1"
    assert next_version(existing, 2) == "2.1.1"
    assert next_version(existing, 1) == "1.2.1"
    assert next_version(existing, 0) == "0.1.2"
    assert next_version(existing, 7) == "7.0.0"
    assert next_version([]) == "0.0.1"


async def test_create_missing_creates_gallery_and_definition(azurite, arm, azure_config, make_ctx, small_artifact):
    spec = shared_spec(
        galleryImageId=f"{RG}/galleries/newgal/images/newdef",
        targetRegions=[{"name": "westus"}],
        versioning={"scheme": "Source"},
    )
    small_artifact.source_version = "4.5.6"
    with pytest.raises(DistributeError, match="create_missing"):
        await AzureSharedImage().publish(small_artifact, spec, make_ctx(azure_config))
    output = await AzureSharedImage().publish(small_artifact, spec, make_ctx(azure_config, create_missing=True))
    assert output.artifact_id == f"{RG}/galleries/newgal/images/newdef/versions/4.5.6"
    definition = arm.resource(f"{RG}/galleries/newgal/images/newdef")
    assert definition is not None and definition["location"] == "westus"
    assert definition["properties"]["hyperVGeneration"] == "V2" and definition["properties"]["osType"] == "Linux"
    assert arm.resource(f"{RG}/galleries/newgal") is not None
    assert await staging_blobs(azurite, "aibreplica2") == []
