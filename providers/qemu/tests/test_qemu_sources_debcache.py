"""How the Debian source picks a cached image: by the mirror's Release date, by an explicit date, and offline.

The cache entries are written here the way the builder writes them (``meta.json`` + ``disk.qcow2`` under the
digest key), so these checks need no debootstrap. The mirror is a ``file://`` folder holding a Release file, or
an unreachable port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from aib_provider_qemu.debian.source import OFFERS, DebianPlatformSource, cache_key, check_can_build
from aib_sdk.config import Config
from aib_sdk.errors import SourceError
from aib_sdk.events import WarningEvent
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

pytestmark = pytest.mark.anyio
BIOS = OFFERS[0]


def _cache_entry(cache: Path, version: str) -> Path:
    directory = cache / "debian" / cache_key(version, BIOS)
    directory.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(directory / "disk.qcow2"), "16M"], check=True)
    meta = {"exactVersion": version, "firmware": "bios", "sha256": "0" * 64, "attributes": {"firmware": "bios"}}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def _mirror(tmp_path: Path, date: str) -> str:
    dists = tmp_path / "mirror" / "dists" / "bookworm"
    dists.mkdir(parents=True)
    (dists / "Release").write_text(f"Origin: Debian\nCodename: bookworm\nDate: {date}\n")
    return f"file://{tmp_path}/mirror"


def _resolve_ctx(tmp_path: Path, mirror: str, events: EventRecorder):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_")}
    env |= {"AIB_CACHE": str(tmp_path / "cache"), "AIB_HOME": str(tmp_path / "home"), "AIB_QEMU_DEBIAN_MIRROR": mirror}
    return make_run_context(tmp_path, config=Config({}, env), emit=events)


def _spec(version: str) -> PlatformImageSource:
    return PlatformImageSource.model_validate(
        {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": version}
    )


async def test_latest_uses_the_entry_of_the_mirrors_release_date(tmp_path: Path) -> None:
    entry = _cache_entry(tmp_path / "cache", "20250517T085243Z")
    _cache_entry(tmp_path / "cache", "20240101T000000Z")
    mirror = _mirror(tmp_path, "Sat, 17 May 2025 08:52:43 UTC")
    image = await DebianPlatformSource().resolve(_spec("latest"), _resolve_ctx(tmp_path, mirror, EventRecorder()))
    assert image.path == entry / "disk.qcow2"
    assert image.exact_version == "20250517T085243Z" and image.hyper_v_generation == "V1"


async def test_an_explicit_cached_date_needs_no_mirror(tmp_path: Path) -> None:
    entry = _cache_entry(tmp_path / "cache", "20240101T000000Z")
    unreachable = "http://127.0.0.1:9/debian"
    image = await DebianPlatformSource().resolve(
        _spec("2024-01-01"), _resolve_ctx(tmp_path, unreachable, EventRecorder())
    )
    assert image.path == entry / "disk.qcow2"
    with pytest.raises(SourceError, match="cannot fetch"):
        await DebianPlatformSource().resolve(_spec("2023-01-01"), _resolve_ctx(tmp_path, unreachable, EventRecorder()))


async def test_offline_latest_falls_back_to_the_newest_cached_image_with_a_warning(tmp_path: Path) -> None:
    _cache_entry(tmp_path / "cache", "20240101T000000Z")
    newest = _cache_entry(tmp_path / "cache", "20250517T085243Z")
    events = EventRecorder()
    image = await DebianPlatformSource().resolve(
        _spec("latest"), _resolve_ctx(tmp_path, "http://127.0.0.1:9/d", events)
    )
    assert image.path == newest / "disk.qcow2"
    assert any("newest cached" in w.message for w in events.of_kind(WarningEvent))


async def test_stale_entries_of_another_builder_are_ignored(tmp_path: Path) -> None:
    entry = _cache_entry(tmp_path / "cache", "20250517T085243Z")
    entry.rename(entry.with_name("0" * 32))  # a key this builder would not compute for that version
    with pytest.raises(SourceError, match="cannot fetch"):
        await DebianPlatformSource().resolve(
            _spec("latest"), _resolve_ctx(tmp_path, "http://127.0.0.1:9/d", EventRecorder())
        )


async def test_a_date_the_mirror_does_not_have_is_refused_before_building(tmp_path: Path) -> None:
    mirror = _mirror(tmp_path, "Sat, 17 May 2025 08:52:43 UTC")
    with pytest.raises(SourceError, match=r"not available.*20250517T085243Z"):
        await DebianPlatformSource().resolve(_spec("2025-05-01"), _resolve_ctx(tmp_path, mirror, EventRecorder()))
    assert not (tmp_path / "cache" / "debian").exists() or not any((tmp_path / "cache" / "debian").iterdir())


def test_missing_build_tools_are_named_with_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    check_can_build("uefi")  # this machine has everything (apt-packages-debian.txt)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SourceError) as info:
        check_can_build("uefi")
    for package in ("debootstrap", "e2fsprogs", "fdisk", "mtools", "qemu-utils"):
        assert package in str(info.value)
