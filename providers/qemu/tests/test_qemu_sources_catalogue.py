"""The publisher catalogue: ``[qemu.catalogue]`` maps marketplace names to images; others get a clear error."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from aib_provider_qemu.catalogue import CataloguePlatformSource, disk_spec, find_entry
from aib_provider_qemu.debian import DebianPlatformSource
from aib_sdk.config import Config
from aib_sdk.errors import SourceError, UsageError
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

UBUNTU = {
    "type": "PlatformImage",
    "publisher": "Canonical",
    "offer": "0001-com-ubuntu-server-jammy",
    "sku": "22_04-lts-gen2",
    "version": "latest",
}


def _spec(**overrides: str) -> PlatformImageSource:
    return PlatformImageSource.model_validate({**UBUNTU, **overrides})


def _config(tmp_path: Path, table: dict[str, object] | None = None, env: dict[str, str] | None = None) -> Config:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIB_")}
    environ |= {"AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "cache"), **(env or {})}
    return Config({"qemu": {"catalogue": table}} if table is not None else {}, environ)


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "jammy.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    return path


@pytest.mark.anyio
async def test_catalogue_entry_resolves_to_the_mapped_image(tmp_path: Path, disk: Path) -> None:
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    key = "canonical:0001-com-ubuntu-server-jammy:22_04-LTS-gen2"  # keys match case-insensitively
    config = _config(
        tmp_path,
        {
            key: {
                "uri": disk.as_uri(),
                "sha256": digest,
                "format": "qcow2",
                "hyperVGeneration": "V2",
                "version": "22.04.202505",
            }
        },
    )
    spec = _spec()
    assert CataloguePlatformSource.claims(spec, config)
    ctx = make_run_context(tmp_path, config=config, emit=EventRecorder(), options=BuildOptions(config=config))

    image = await CataloguePlatformSource().resolve(spec, ctx)

    assert (image.path, image.format, image.sha256) == (disk, "qcow2", digest)
    assert image.hyper_v_generation == "V2"
    assert image.exact_version == "22.04.202505"
    assert image.attributes["catalogue"] == "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2"


@pytest.mark.anyio
async def test_versioned_key_and_version_mismatch(tmp_path: Path, disk: Path) -> None:
    config = _config(
        tmp_path,
        {
            "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:22.04.1": {"uri": str(disk)},
            "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2": {"uri": str(disk), "version": "22.04.9"},
        },
    )
    ctx = make_run_context(tmp_path, config=config, options=BuildOptions(config=config))
    pinned = await CataloguePlatformSource().resolve(_spec(version="22.04.1"), ctx)
    assert pinned.exact_version == "22.04.1"
    found = find_entry(_spec(version="22.04.1"), config)
    assert found is not None and found[0].endswith(":22.04.1")
    with pytest.raises(SourceError, match=r"holds version 22\.04\.9"):
        await CataloguePlatformSource().resolve(_spec(version="22.04.5"), ctx)


def test_catalogue_from_the_environment_as_json(tmp_path: Path, disk: Path) -> None:
    table = {"RedHat:RHEL:9-lvm-gen2": {"uri": disk.as_uri()}}
    config = _config(tmp_path, env={"AIB_QEMU_CATALOGUE": json.dumps(table)})
    spec = _spec(publisher="RedHat", offer="RHEL", sku="9-lvm-gen2")
    assert find_entry(spec, config) is not None
    with pytest.raises(UsageError, match="JSON"):
        find_entry(spec, _config(tmp_path, env={"AIB_QEMU_CATALOGUE": "{not json"}))


def test_bad_entries_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown key 'url'"):
        disk_spec("A:B:C", {"url": "https://x/y.qcow2"})
    with pytest.raises(UsageError, match="format"):
        disk_spec("A:B:C", {"uri": "https://x/y.qcow2", "format": "iso"})


@pytest.mark.anyio
async def test_other_publishers_fail_clearly_naming_source_and_catalogue(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ctx = make_run_context(tmp_path, config=config, options=BuildOptions(config=config))
    for publisher, offer, sku in [
        ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"),
        ("RedHat", "RHEL", "9-lvm-gen2"),
        ("MicrosoftWindowsServer", "WindowsServer", "2022-datacenter-azure-edition"),
    ]:
        spec = _spec(publisher=publisher, offer=offer, sku=sku)
        assert not CataloguePlatformSource.claims(spec, config)  # left to other providers (azure) first
        assert not DebianPlatformSource.claims(spec, config)
        with pytest.raises(SourceError) as info:
            await CataloguePlatformSource().resolve(spec, ctx)
        message = str(info.value)
        assert "--source" in message and "[qemu.catalogue]" in message
        assert f'"{publisher}:{offer}:{sku}" = {{ uri = ' in message
        assert CataloguePlatformSource.explain_unclaimed(spec, config) == message


def test_debian_and_the_tiny_guest_are_left_to_their_own_sources(tmp_path: Path) -> None:
    config = _config(tmp_path)
    debian = _spec(publisher="debian", offer="debian-12", sku="12")
    assert DebianPlatformSource.claims(debian, config)
    assert not CataloguePlatformSource.claims(debian, config)
    assert not CataloguePlatformSource.claims(_spec(publisher="aib-sdk", offer="tiny-test-guest"), config)
