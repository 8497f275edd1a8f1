"""Routing helpers and the local rehearsal profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_sdk.errors import UsageError
from aib_sdk.routing import (
    apply_profile,
    is_azure_arm_id,
    is_local_arm_id,
    local_file_path,
    parse_arm_id,
    rewrite_to_local,
)

GALLERY = "/subscriptions/0000/resourceGroups/rg1/providers/Microsoft.Compute/galleries/g1/images/def/versions/1.0.0"


def test_parse_arm_id() -> None:
    parsed = parse_arm_id(GALLERY)
    assert parsed is not None
    assert (parsed.subscription, parsed.resource_group, parsed.namespace) == ("0000", "rg1", "Microsoft.Compute")
    assert parsed.get("galleries") == "g1" and parsed.get("IMAGES") == "def" and parsed.get("versions") == "1.0.0"
    assert str(parsed) == GALLERY
    assert parse_arm_id("s3://bucket/key") is None
    assert parse_arm_id("/subscriptions/x/resourceGroups/y/providers/Microsoft.Compute/images") is None


def test_local_and_azure_ids() -> None:
    local = rewrite_to_local(GALLERY)
    assert local.startswith("/subscriptions/local/resourceGroups/rg1/")
    assert is_local_arm_id(local) and not is_azure_arm_id(local)
    assert is_azure_arm_id(GALLERY) and not is_local_arm_id(GALLERY)
    assert rewrite_to_local("https://x") == "https://x"


def test_local_profile_rewrites_source_and_targets_only() -> None:
    props = {
        "source": {"type": "SharedImageVersion", "imageVersionId": GALLERY},
        "distribute": [
            {"type": "SharedImage", "galleryImageId": GALLERY, "runOutputName": "a"},
            {"type": "VHD", "runOutputName": "b", "uri": "s3://b/k"},
        ],
        "vmProfile": {"vnetConfig": {"subnetId": GALLERY}},
    }
    out = apply_profile(props, "local")
    assert is_local_arm_id(out["source"]["imageVersionId"])
    assert is_local_arm_id(out["distribute"][0]["galleryImageId"])
    assert out["distribute"][1]["uri"] == "s3://b/k"
    assert out["vmProfile"] == props["vmProfile"]
    assert props["source"]["imageVersionId"] == GALLERY  # input untouched
    assert apply_profile(props, None) is props


@pytest.mark.parametrize("uri", ["file://relative/x.vhd", "file:///a/../etc/passwd", "s3://b/k", "file://host/x"])
def test_local_file_path_rejects(uri: str) -> None:
    with pytest.raises(UsageError):
        local_file_path(uri)


def test_local_file_path_accepts_absolute() -> None:
    assert local_file_path("file:///tmp/out%20dir/x.vhd") == Path("/tmp/out dir/x.vhd")
