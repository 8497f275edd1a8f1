"""Local ids, name rules and settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_provider_local_gallery.ids import (
    GalleryImageRef,
    GalleryRef,
    ManagedImageRef,
    parse_gallery_image_id,
    parse_local_id,
    parse_version,
)
from aib_provider_local_gallery.settings import GallerySettings
from aib_sdk.config import Config
from aib_sdk.errors import UsageError

BASE = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute"


def test_ids_round_trip_exactly() -> None:
    version = f"{BASE}/galleries/my_gallery/images/ubuntu-22/versions/1.2.3"
    ref = parse_local_id(version)
    assert ref == GalleryImageRef("rg1", "my_gallery", "ubuntu-22", "1.2.3")
    assert isinstance(ref, GalleryImageRef) and ref.id == version
    assert ref.with_version(None).id == f"{BASE}/galleries/my_gallery/images/ubuntu-22"
    assert parse_local_id(f"{BASE}/images/web-image") == ManagedImageRef("rg1", "web-image")
    assert parse_local_id(f"{BASE}/images/web-image").id == f"{BASE}/images/web-image"
    assert parse_local_id(f"{BASE}/galleries/g1") == GalleryRef("rg1", "g1")
    assert parse_gallery_image_id(f"{BASE}/galleries/g1/images/d/versions/LATEST").version == "latest"


@pytest.mark.parametrize(
    "value",
    [
        f"{BASE}/galleries/../images/d",  # traversal as a gallery name
        f"{BASE}/galleries/g/images/../versions/1.0.0",
        f"{BASE}/galleries/g/images/d/versions/../../x",  # odd segment count: not an ARM id
        "/subscriptions/local/resourceGroups/../providers/Microsoft.Compute/galleries/g",
        "/subscriptions/local/resourceGroups/.../providers/Microsoft.Compute/galleries/g",
        f"{BASE}/galleries/my-gallery",  # galleries allow no hyphen
        f"{BASE}/galleries/g/images/d/versions/1.2",
        f"{BASE}/galleries/g/images/d/versions/1.2.99999999999",
        f"{BASE}/galleries/g/images/.hidden",
        f"{BASE}/virtualMachines/vm1",
        "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/galleries/g",  # not local
        "galleries/g/images/d",
    ],
)
def test_bad_ids_are_rejected(value: str) -> None:
    with pytest.raises(UsageError):
        parse_local_id(value)


def test_version_parsing() -> None:
    assert parse_version("0.24105.52755") == (0, 24105, 52755)
    with pytest.raises(UsageError):
        parse_version("01.2.3")


def test_settings_root_regions_and_env(tmp_path: Path) -> None:
    config = Config(
        {
            "local-gallery": {
                "root": str(tmp_path / "g"),
                "regions": {"westeurope": str(tmp_path / "we")},
                "home_region": "eastus",
            }
        },
        {"HOME": str(tmp_path)},
    )
    settings = GallerySettings.from_config(config)
    assert settings.root == tmp_path / "g"
    assert settings.home_region == "eastus"
    assert settings.region_root("WestEurope") == tmp_path / "we"
    assert settings.region_root("northeurope") == tmp_path / "g" / "regions" / "northeurope"
    with pytest.raises(UsageError):
        settings.region_root("../x")
    env = GallerySettings.from_config(Config({}, {"HOME": str(tmp_path), "AIB_GALLERY_ROOT": str(tmp_path / "e")}))
    assert env.root == tmp_path / "e"
    default = GallerySettings.from_config(Config({}, {"HOME": str(tmp_path)}))
    assert default.root == tmp_path / ".local" / "share" / "aib" / "gallery"
    with pytest.raises(UsageError):
        GallerySettings.from_config(Config({"local-gallery": {"root": "relative/dir"}}, {"HOME": str(tmp_path)}))
