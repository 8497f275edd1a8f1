"""The Debian mirror comes from apt's own files (both formats); Release dates become exactVersions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aib_provider_qemu.debian import mirror
from aib_provider_qemu.debian.source import OFFERS, cache_key, find_offer
from aib_sdk.errors import SourceError
from aib_sdk.models.specs import PlatformImageSource

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example.test/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example.test/debian-security
Suites: bookworm-security
Components: main
"""

ONE_LINE = """\
# a comment
deb-src http://src.example.test/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] https://one.test/debian/ bookworm main contrib
deb http://security.example.test/debian-security bookworm-security main
"""

RELEASE = """\
Origin: Debian
Label: Debian
Suite: stable
Version: 12.11
Codename: bookworm
Changelogs: https://metadata.ftp-master.debian.org/changelogs/@CHANGEPATH@_changelog
Date: Sat, 17 May 2025 08:52:43 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64
Components: main contrib non-free-firmware non-free
Description: Debian 12.11 Released 17 May 2025
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
"""


def _apt_dir(tmp_path: Path, *, sources: str | None = None, one_line: str | None = None) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    if sources is not None:
        (apt / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line is not None:
        (apt / "sources.list").write_text(one_line)
    return apt


def test_deb822_sources_give_the_bookworm_mirror_not_security(tmp_path: Path) -> None:
    entries = mirror.read_apt_entries(_apt_dir(tmp_path, sources=DEB822))
    assert [e.uri for e in entries] == [
        "http://mirror.example.test/debian",
        "http://mirror.example.test/debian-security",
    ]
    assert entries[0].suites == ("bookworm", "bookworm-updates")
    assert mirror.pick_mirror(entries, "bookworm") == "http://mirror.example.test/debian"


def test_one_line_sources_list_with_options_and_deb_src(tmp_path: Path) -> None:
    entries = mirror.read_apt_entries(_apt_dir(tmp_path, one_line=ONE_LINE))
    assert [e.uri for e in entries] == [
        "https://one.test/debian/",
        "http://security.example.test/debian-security",
    ]
    assert entries[0].components == ("main", "contrib")
    assert mirror.pick_mirror(entries, "bookworm") == "https://one.test/debian"


def test_deb822_disabled_stanza_and_continuation_lines() -> None:
    text = (
        "Types: deb\nURIs: http://off.test/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
        "Types: deb\nURIs: http://a.test/debian\n  http://b.test/debian\nSuites: trixie\nComponents: main\n"
    )
    entries = mirror.parse_deb822(text)
    assert [e.uri for e in entries] == ["http://a.test/debian", "http://b.test/debian"]
    # No entry names bookworm: any non-security Debian mirror serves it too.
    assert mirror.pick_mirror(entries, "bookworm") == "http://a.test/debian"


def test_no_usable_mirror_is_a_clear_error(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, one_line="deb http://security.example.test/debian-security bookworm-security main\n")
    with pytest.raises(SourceError, match="debian_mirror"):
        mirror.pick_mirror(mirror.read_apt_entries(apt), "bookworm")


@pytest.mark.anyio
async def test_configured_mirror_wins_and_must_be_a_url(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, sources=DEB822)
    assert await mirror.find_mirror("bookworm", "http://mine.test/debian/", apt) == "http://mine.test/debian"
    assert await mirror.find_mirror("bookworm", None, apt) == "http://mirror.example.test/debian"
    with pytest.raises(SourceError):
        await mirror.find_mirror("bookworm", "mine.test/debian", apt)


def test_release_date_and_exact_version() -> None:
    date = mirror.release_date(RELEASE)
    assert date == datetime(2025, 5, 17, 8, 52, 43, tzinfo=UTC)
    exact = mirror.version_of(date)
    assert exact == "20250517T085243Z"
    for requested in ("latest", "2025-05-17", "20250517", "20250517T085243Z", "2025-05-17T08:52"):
        assert mirror.version_matches(requested, exact), requested
    for requested in ("2025-05-16", "20250518", "12.11", ""):
        assert not mirror.version_matches(requested, exact), requested


def test_inrelease_with_pgp_armour_and_missing_date() -> None:
    signed = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + RELEASE
    assert mirror.version_of(mirror.release_date(signed)) == "20250517T085243Z"
    with pytest.raises(SourceError, match="no Date"):
        mirror.release_date("Origin: Debian\nSuite: stable\n")


@pytest.mark.anyio
async def test_release_is_read_from_a_file_mirror(tmp_path: Path) -> None:
    dists = tmp_path / "debian" / "dists" / "bookworm"
    dists.mkdir(parents=True)
    (dists / "Release").write_text(RELEASE)
    text = await mirror.fetch_release(f"file://{tmp_path}/debian", "bookworm")
    assert mirror.release_date(text).year == 2025


def test_offers_and_cache_key() -> None:
    def spec(sku: str) -> PlatformImageSource:
        return PlatformImageSource.model_validate(
            {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": sku, "version": "latest"}
        )

    assert find_offer(spec("12")).firmware == "bios"
    assert find_offer(spec("12-gen2")).generation == "V2"
    with pytest.raises(SourceError, match="debian-12/12-gen2"):
        find_offer(spec("11"))
    bios, uefi = OFFERS
    assert cache_key("20250517T085243Z", bios) == cache_key("20250517T085243Z", bios)
    assert cache_key("20250517T085243Z", bios) != cache_key("20250518T085243Z", bios)
    assert cache_key("20250517T085243Z", bios) != cache_key("20250517T085243Z", uefi)
