"""The ``make demo`` template plans as intended with the installed providers (no VM is started here)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from aib_provider_qemu.catalogue import CataloguePlatformSource
from aib_provider_qemu.debian import DebianPlatformSource
from aib_provider_qemu.url_source import UrlDiskSource
from aib_sdk.builder.plan import make_plan
from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TEMPLATE = EXAMPLES / "debian-demo.json"


def _config(tmp_path: Path) -> Config:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_")}
    return Config({}, {**env, "AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "cache")})


def test_script_checksum_in_the_template_is_the_scripts() -> None:
    template = json.loads(TEMPLATE.read_text())
    (step,) = [s for s in template["properties"]["customize"] if "scriptUri" in s]
    script = TEMPLATE.parent / step["scriptUri"]
    assert hashlib.sha256(script.read_bytes()).hexdigest() == step["sha256Checksum"]


@pytest.mark.anyio
async def test_demo_template_routes_to_debian_local_gallery_and_a_disk_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    plan = await make_plan(
        TEMPLATE, BuildOptions(config=config, params={"outputDir": str(tmp_path / "out")}, plugins=PluginManager())
    )
    assert plan.source is DebianPlatformSource
    assert plan.name == "debian-demo"
    assert [s.type_name for s in plan.steps] == ["Shell", "Shell", "File", "Shell"]
    assert [v.type_name for v in plan.validations] == ["Shell"]
    owners = {t.run_output_name: plan.plugins.registry.owner[t.distributor] for t in plan.targets}
    assert owners == {"debian12-gallery": "aib-provider-local-gallery", "debian12-qcow2": "aib-sdk"}
    disk_file = next(t.spec for t in plan.targets if t.type_name == "DiskFile")
    assert disk_file.model_dump()["uri"] == (tmp_path / "out" / "debian-demo.qcow2").as_uri()


@pytest.mark.anyio
async def test_a_disk_image_source_routes_to_the_url_source(tmp_path: Path) -> None:
    source = {"type": "DiskImage", "uri": "https://images.example.test/x.qcow2"}
    options = BuildOptions(
        config=_config(tmp_path), params={"outputDir": str(tmp_path)}, source=source, plugins=PluginManager()
    )
    assert (await make_plan(TEMPLATE, options)).source is UrlDiskSource


@pytest.mark.anyio
async def test_other_publishers_route_to_the_catalogue_or_explain_it(tmp_path: Path) -> None:
    source = {"type": "PlatformImage", "publisher": "Canonical", "offer": "o", "sku": "s", "version": "latest"}
    plugins = PluginManager(disabled=["aib-provider-azure"])  # azure would claim it when configured
    assert CataloguePlatformSource in plugins.registry.sources
    params = {"outputDir": str(tmp_path)}
    options = BuildOptions(config=_config(tmp_path), params=params, source=source, plugins=plugins)
    with pytest.raises(UsageError) as info:
        await make_plan(TEMPLATE, options)
    assert "--source" in str(info.value) and '[qemu.catalogue]\n  "Canonical:o:s" = {' in str(info.value)
    mapped = Config(
        {"qemu": {"catalogue": {"Canonical:o:s": {"uri": "https://example.invalid/x.qcow2", "sha256": "0" * 64}}}},
        {"HOME": str(tmp_path), "AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "cache")},
    )
    options = BuildOptions(config=mapped, params={"outputDir": str(tmp_path)}, source=source, plugins=plugins)
    assert (await make_plan(TEMPLATE, options)).source is CataloguePlatformSource
