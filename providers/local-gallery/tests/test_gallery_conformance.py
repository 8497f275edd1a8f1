"""The local gallery's SharedImage distributor passes the provider conformance suite."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from aib_provider_local_gallery.distributors import LocalSharedImageDistributor
from aib_provider_local_gallery.ids import parse_gallery_image_id
from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.store import GalleryStore
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.options import BuildOptions
from aib_sdk.testing.conformance import DistributorConformance
from aib_sdk.testing.fakes import make_run_context

IMAGES = "/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images"


def _config(tmp_path: Path) -> Config:
    data = {"local-gallery": {"root": str(tmp_path / "gallery"), "fsync": "false"}}
    return Config(data, {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")})


class TestLocalSharedImage(DistributorConformance):
    distributor = LocalSharedImageDistributor

    def context(self, tmp_path: Path) -> RunContext:
        config = _config(tmp_path)
        options = BuildOptions(config=config, create_missing=True)
        return make_run_context(tmp_path / "ctx", config=config, options=options)

    def target(self, where: Path) -> dict[str, Any]:
        image = f"{IMAGES}/{where.name}/versions/1.0.0"  # one definition per target, in the test's gallery
        return {"type": "SharedImage", "galleryImageId": image, "runOutputName": "sig", "targetRegions": []}

    def published(self, where: Path) -> list[str]:
        store = GalleryStore(GallerySettings.from_config(_config(where.parent)))
        with contextlib.suppress(Exception):  # no definition yet: nothing published
            return [m.name for m in store.versions(parse_gallery_image_id(f"{IMAGES}/{where.name}"))]
        return []
