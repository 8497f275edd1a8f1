"""Azure sources: export through a temporary disk and a read SAS (ARM test server + a real Azurite blob)."""

from __future__ import annotations

import os

import httpx
import pytest

from aib_provider_azure.blob import BlobService
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.sharedkey import blob_sas
from aib_provider_azure.sources import (
    AzureManagedImageSource,
    AzurePlatformImageSource,
    AzureSharedImageVersionSource,
)
from aib_provider_azure.testing.files import MIB, write_sparse
from aib_provider_azure.upload import upload_page_blob
from aib_sdk.config import Config
from aib_sdk.errors import SourceError
from aib_sdk.events import Progress
from aib_sdk.models.specs import ManagedImageSource, PlatformImageSource, SharedImageVersionSource

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

SUB = "0000-1111"
RG = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute"
DEFINITION = f"{RG}/galleries/gal1/images/ubuntu"


@pytest.fixture
async def base_vhd(azurite, arm, tmp_path):
    """A 24 MiB + 512 VHD-shaped page blob in Azurite; the ARM server hands out read SAS URLs for it."""
    path = write_sparse(
        tmp_path / "base.vhd", 24 * MIB + 512, {MIB: os.urandom(MIB), 17 * MIB: os.urandom(5000), 24 * MIB: b"c" * 512}
    )
    settings = AzureSettings.from_config(Config({"azure": azurite.config()}, {}))
    uri = f"{azurite.endpoint('devstoreaccount1')}/images/base-{os.urandom(4).hex()}.vhd"
    blob = settings.parse_blob_uri(uri)
    assert blob is not None
    async with httpx.AsyncClient() as client:
        await upload_page_blob(BlobService(client), path, blob)

    def export_sas(source_uri: str) -> str:
        ref = settings.parse_blob_uri(source_uri)
        assert ref is not None and ref.account.key is not None
        return f"{source_uri}?{blob_sas(ref.account.name, ref.account.key, ref.container, ref.name)}"

    arm.state.export_sas = export_sas
    return path, uri


def disks_left(arm) -> list[str]:
    return [k for k in arm.state.resources if "/disks/" in k]


async def test_managed_image_source_exports_only_written_ranges(arm, base_vhd, azure_config, make_ctx, events):
    path, uri = base_vhd
    image_id = f"{RG}/images/golden"
    arm.add(
        image_id,
        {
            "location": "eastus",
            "properties": {"hyperVGeneration": "V2", "storageProfile": {"osDisk": {"osType": "Linux", "blobUri": uri}}},
        },
    )
    spec = ManagedImageSource.model_validate({"type": "ManagedImage", "imageId": image_id})
    assert AzureManagedImageSource.claims(spec, Config({}, {}))
    image = await AzureManagedImageSource().resolve(spec, make_ctx(azure_config))
    assert image.format == "vpc" and image.hyper_v_generation == "V2" and image.os_type == "Linux"
    assert image.path.read_bytes() == path.read_bytes()
    assert image.path.stat().st_blocks * 512 < 8 * MIB  # holes stay holes
    posts = [p for m, p in arm.state.requests if m == "POST"]
    assert [p.rsplit("/", 1)[1] for p in posts] == ["beginGetAccess", "endGetAccess"]
    assert disks_left(arm) == []
    downloads = [e for e in events if isinstance(e, Progress) and e.task == "download"]
    assert downloads and downloads[-1].done == downloads[-1].total < 24 * MIB


async def test_gallery_latest_skips_excluded_versions(arm, base_vhd, azure_config, make_ctx):
    _, uri = base_vhd
    arm.add(f"{RG}/galleries/gal1", {"location": "eastus"})
    arm.add(DEFINITION, {"location": "eastus", "properties": {"osType": "Linux", "hyperVGeneration": "V1"}})
    source = {"storageProfile": {"osDiskImage": {"source": {"uri": uri}}}}
    for version, excluded in (("1.0.0", False), ("1.2.0", True), ("1.1.0", False)):
        arm.add(
            f"{DEFINITION}/versions/{version}",
            {"location": "eastus", "properties": {**source, "publishingProfile": {"excludeFromLatest": excluded}}},
        )
    spec = SharedImageVersionSource.model_validate(
        {"type": "SharedImageVersion", "imageVersionId": f"{DEFINITION}/versions/latest"}
    )
    image = await AzureSharedImageVersionSource().resolve(spec, make_ctx(azure_config))
    assert image.exact_version == "1.1.0" and image.hyper_v_generation == "V1"
    assert disks_left(arm) == []


async def test_platform_image_latest_when_azure_is_configured(arm, base_vhd, azure_config, make_ctx):
    path, uri = base_vhd
    arm.state.platform_images[("canonical", "ubuntu-24_04-lts", "server")] = {
        "24.04.202412010": uri,
        "24.04.202501100": uri,
        "24.04.202409300": uri,
    }
    azure = {**azure_config, "subscription_id": SUB, "location": "eastus", "export_resource_group": "rg1"}
    spec = PlatformImageSource.model_validate(
        {
            "type": "PlatformImage",
            "publisher": "Canonical",
            "offer": "ubuntu-24_04-lts",
            "sku": "server",
            "version": "latest",
        }
    )
    assert AzurePlatformImageSource.claims(spec, Config({"azure": azure}, {}))
    assert not AzurePlatformImageSource.claims(spec, Config({}, {}))
    debian = spec.model_copy(update={"publisher": "Debian"})
    assert not AzurePlatformImageSource.claims(debian, Config({"azure": azure}, {}))
    image = await AzurePlatformImageSource().resolve(spec, make_ctx(azure))
    assert image.exact_version == "24.04.202501100"
    assert image.path.read_bytes() == path.read_bytes()


async def test_missing_image_and_failed_download_leave_no_disk(arm, base_vhd, azure_config, make_ctx):
    spec = ManagedImageSource.model_validate({"type": "ManagedImage", "imageId": f"{RG}/images/none"})
    with pytest.raises(SourceError, match="does not exist"):
        await AzureManagedImageSource().resolve(spec, make_ctx(azure_config))
    _, uri = base_vhd
    arm.add(
        f"{RG}/images/broken",
        {"location": "eastus", "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "blobUri": uri}}}},
    )
    arm.state.export_sas = lambda source: f"{source}?sv=2021-08-06&sr=b&sp=r&sig=bm90LXZhbGlk"
    spec = ManagedImageSource.model_validate({"type": "ManagedImage", "imageId": f"{RG}/images/broken"})
    with pytest.raises(SourceError, match="export failed") as info:
        await AzureManagedImageSource().resolve(spec, make_ctx(azure_config))
    assert "sig=" not in str(info.value)  # the SAS is never echoed
    assert disks_left(arm) == []
