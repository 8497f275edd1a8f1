"""The provider loads through its entry point and wins routing only for Azure targets; settings parsing."""

from __future__ import annotations

import importlib.metadata

import pytest

from aib_provider_azure.distributors.managed_image import AzureManagedImage
from aib_provider_azure.distributors.shared_image import AzureSharedImage
from aib_provider_azure.distributors.vhd import AzureVhd
from aib_provider_azure.ranges import chunks, data_extents
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.testing.files import MIB, write_sparse
from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.models.specs import ManagedImageDistributor, SharedImageDistributor, VhdDistributor
from aib_sdk.plugins.manager import PluginManager

AZURITE = {"storage": {"devstoreaccount1": {"blob_endpoint": "http://127.0.0.1:10000/devstoreaccount1", "key": "a2V5"}}}
ARM = "/subscriptions/0000-1111/resourceGroups/rg/providers/Microsoft.Compute"


def test_entry_point_registers_the_three_distributors() -> None:
    (ep,) = [e for e in importlib.metadata.entry_points(group="aib_sdk") if e.name == "aib-provider-azure"]
    pm = PluginManager(entry_points=False, plugins=[ep.load()])
    config = Config({"azure": AZURITE}, {})
    vhd = VhdDistributor.model_validate(
        {"type": "VHD", "runOutputName": "v", "uri": "http://127.0.0.1:10000/devstoreaccount1/c/x.vhd"}
    )
    assert pm.distributor_for(vhd, config) is AzureVhd
    mi = ManagedImageDistributor.model_validate(
        {"type": "ManagedImage", "runOutputName": "m", "imageId": f"{ARM}/images/i", "location": "eastus"}
    )
    assert pm.distributor_for(mi, config) is AzureManagedImage
    sig = SharedImageDistributor.model_validate(
        {"type": "SharedImage", "runOutputName": "s", "galleryImageId": f"{ARM}/galleries/g/images/d"}
    )
    assert pm.distributor_for(sig, config) is AzureSharedImage
    assert not AzureSharedImage.claims(
        sig.model_copy(update={"gallery_image_id": sig.gallery_image_id.replace("0000-1111", "local")}), config
    )


def test_blob_uri_parsing_and_traversal() -> None:
    settings = AzureSettings.from_config(Config({"azure": AZURITE}, {}))
    ref = settings.parse_blob_uri("http://127.0.0.1:10000/devstoreaccount1/vhds/a/b.vhd")
    assert ref is not None and (ref.account.name, ref.container, ref.name) == ("devstoreaccount1", "vhds", "a/b.vhd")
    ref = settings.parse_blob_uri("https://acct01.blob.core.windows.net/vhds", "default.vhd")
    assert ref is not None and ref.url == "https://acct01.blob.core.windows.net/vhds/default.vhd"
    assert ref.account.key is None
    assert settings.parse_blob_uri("http://127.0.0.1:9999/other/c/x.vhd") is None
    assert settings.parse_blob_uri("s3://bucket/x.vhd") is None
    assert settings.parse_blob_uri("http://acct01.blob.core.windows.net/c/x.vhd") is None  # TLS only
    for bad in (
        "https://acct01.blob.core.windows.net/c/../x.vhd",
        "https://acct01.blob.core.windows.net/c/a//b",
        "https://acct01.blob.core.windows.net/c/x.vhd?sig=secret",
        "https://acct01.blob.core.windows.net/C/x",
    ):
        with pytest.raises(UsageError):
            settings.parse_blob_uri(bad)
        assert settings.claims_uri(bad)  # ours, so publish() explains what is wrong
    assert "a2V5" not in repr(settings) and "key" not in repr(settings.account("devstoreaccount1")).lower()


def test_env_overrides_and_ca_bundle_never_disables_verification(tmp_path) -> None:
    config = Config({"azure": AZURITE}, {"AIB_AZURE_ARM_ENDPOINT": "https://arm.example.test/"})
    settings = AzureSettings.from_config(config)
    assert settings.arm_endpoint == "https://arm.example.test"
    assert settings.verify() is True
    with pytest.raises(UsageError, match="ca_bundle"):
        AzureSettings(ca_bundle=str(tmp_path / "missing.pem")).verify()


def test_chunks_cover_extents_on_a_4_mib_grid(tmp_path) -> None:
    path = write_sparse(tmp_path / "s.vhd", 20 * MIB + 512, {5 * MIB: b"x" * 10, 7 * MIB: b"y", 20 * MIB: b"f" * 512})
    with open(path, "rb") as f:
        extents = data_extents(f.fileno(), path.stat().st_size)
    assert list(chunks(extents, path.stat().st_size)) == [(4 * MIB, 4 * MIB), (20 * MIB, 512)]
    assert list(chunks([(0, 9 * MIB)], 9 * MIB)) == [(0, 4 * MIB), (4 * MIB, 4 * MIB), (8 * MIB, MIB)]


def test_broken_config_is_a_usage_error_but_routing_still_works() -> None:
    config = Config({"azure": {"upload_concurrency": "many"}}, {})
    with pytest.raises(UsageError, match="upload_concurrency"):
        AzureSettings.from_config(config)
    blob = VhdDistributor.model_validate(
        {"type": "VHD", "runOutputName": "v", "uri": "https://acct01.blob.core.windows.net/c/x.vhd"}
    )
    assert AzureVhd.claims(blob, config)
    assert not AzureVhd.claims(blob.model_copy(update={"uri": "file:///tmp/x.vhd"}), config)
