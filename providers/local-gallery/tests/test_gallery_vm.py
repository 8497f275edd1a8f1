"""End to end with the real Builder and QEMU: build v1 into the gallery, then v2 from v1's ``latest``.

The tiny guest boots by direct kernel boot, so an image built from it needs its base's boot facts (kernel,
arguments, disk interface) to boot again from the gallery: the qemu provider's ``capture`` records them in
``Artifact.source_image`` and the gallery keeps them with the version. QEMU, the guest and the Builder are real.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aib_provider_local_gallery import hooks as gallery_hooks
from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef
from aib_provider_local_gallery.manifest import DefinitionRecord
from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.store import GalleryStore
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fixtures_vm import read_ext4_file

pytestmark = [pytest.mark.vm, pytest.mark.anyio]
DEF_ID = "/subscriptions/local/resourceGroups/images/providers/Microsoft.Compute/galleries/team/images/tiny"


async def test_build_v1_then_v2_from_latest(
    tmp_path: Path, tiny_guest_source: dict[str, str], tiny_guest_cache: Path
) -> None:
    from aib_provider_qemu import hooks as qemu_hooks

    env = dict(os.environ, AIB_HOME=str(tmp_path / "home"), AIB_CACHE=str(tiny_guest_cache))
    env.pop("AIB_GALLERY_ROOT", None)
    config = Config({"local-gallery": {"root": str(tmp_path / "gallery"), "fsync": "false"}}, env)
    store = GalleryStore(GallerySettings.from_config(config))
    store.create_gallery(GalleryRef("images", "team"))
    store.create_definition(
        DefinitionRecord(
            id=DEF_ID,
            name="tiny",
            gallery="team",
            resource_group="images",
            location="local",
            publisher="acme",
            offer="tiny",
            sku="busybox",
        )
    )

    def options(name: str) -> BuildOptions:
        plugins = PluginManager(entry_points=False, plugins=[qemu_hooks, gallery_hooks])
        return BuildOptions(config=config, plugins=plugins, build_host="qemu", timeout=900, template_name=name)

    target = {
        "type": "SharedImage",
        "runOutputName": "sig",
        "galleryImageId": DEF_ID,
        "targetRegions": [{"name": "local"}, {"name": "eastus"}],
    }
    v1 = {
        "source": tiny_guest_source,
        "customize": [{"type": "Shell", "name": "v1", "inline": ["echo one | sudo tee /etc/aib-layer-1"]}],
        "distribute": [target],
    }
    result = await Builder(v1, options=options("v1")).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert result.run_outputs["sig"].artifact_id == f"{DEF_ID}/versions/0.0.1"

    v2 = {
        "source": {"type": "SharedImageVersion", "imageVersionId": f"{DEF_ID}/versions/latest"},
        "customize": [
            {
                "type": "Shell",
                "name": "v2",
                "inline": ["test -f /etc/aib-layer-1", "echo two | sudo tee /etc/aib-layer-2"],
            }
        ],
        "distribute": [target],
    }
    result = await Builder(v2, options=options("v2")).run()
    assert result.run_state == "Succeeded", result.last_run_status.message
    assert result.source_exact_version == "0.0.1"
    assert result.run_outputs["sig"].artifact_id == f"{DEF_ID}/versions/0.0.2"

    manifest = store.get_image(GalleryImageRef("images", "team", "tiny", "latest"))
    assert manifest.name == "0.0.2" and manifest.source_version == "0.0.1"
    assert [r.region for r in manifest.regions] == ["local", "eastus"]
    disk = Path(manifest.regions[1].path)
    assert await read_ext4_file(disk, "qcow2", "/etc/aib-layer-1", tmp_path) == b"one\n"
    assert await read_ext4_file(disk, "qcow2", "/etc/aib-layer-2", tmp_path) == b"two\n"
