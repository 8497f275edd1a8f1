"""The machine's Debian mirror (from apt's own configuration) and the date of a suite's ``Release`` file.

Both apt formats are read: deb822 ``/etc/apt/sources.list.d/*.sources`` and one-line ``sources.list`` /
``sources.list.d/*.list``. No host name is hard-coded: the mirror is whatever apt on this machine uses, unless
the ``[qemu] debian_mirror`` setting (``AIB_QEMU_DEBIAN_MIRROR``) names another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from aib_sdk.errors import SourceError

if TYPE_CHECKING:
    import httpx

APT_DIR = Path("/etc/apt")
_SCHEMES = ("http://", "https://", "ftp://", "file:/")


@dataclass(frozen=True)
class AptEntry:
    """One ``deb`` line (or one URI of a deb822 stanza)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str

    @property
    def is_security(self) -> bool:
        return "security" in self.uri or all(s.endswith("-security") or "/updates" in s for s in self.suites)


def _stanzas(text: str) -> list[dict[str, str]]:
    """deb822 paragraphs as ``{field-lower: value}``, with comments dropped and continuation lines joined."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            current[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            key = name.strip().lower()
            current[key] = value.strip()
    return stanzas


def parse_deb822(text: str, origin: str = "") -> list[AptEntry]:
    """The enabled ``deb`` entries of a deb822 ``.sources`` file."""
    entries: list[AptEntry] = []
    for stanza in _stanzas(text):
        if "deb" not in stanza.get("types", "").split():
            continue
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        suites = tuple(stanza.get("suites", "").split())
        components = tuple(stanza.get("components", "").split())
        entries += [AptEntry(uri, suites, components, origin) for uri in stanza.get("uris", "").split()]
    return entries


_OPTIONS = re.compile(r"\[[^\]]*\]")


def parse_one_line(text: str, origin: str = "") -> list[AptEntry]:
    """The ``deb`` entries of a one-line ``sources.list`` file."""
    entries: list[AptEntry] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        fields = _OPTIONS.sub(" ", line[4:], count=1).split()
        if len(fields) >= 2:
            entries.append(AptEntry(fields[0], (fields[1],), tuple(fields[2:]), origin))
    return entries


def read_apt_entries(apt_dir: Path = APT_DIR) -> list[AptEntry]:
    """Every ``deb`` entry apt on this machine uses, deb822 files first (sync; call in a worker thread)."""
    entries: list[AptEntry] = []
    parts = apt_dir / "sources.list.d"
    files = sorted(parts.glob("*.sources")) if parts.is_dir() else []
    for file in files:
        entries += parse_deb822(file.read_text(encoding="utf-8", errors="replace"), str(file))
    lists = [apt_dir / "sources.list", *(sorted(parts.glob("*.list")) if parts.is_dir() else [])]
    for file in lists:
        if file.is_file():
            entries += parse_one_line(file.read_text(encoding="utf-8", errors="replace"), str(file))
    return entries


def pick_mirror(entries: list[AptEntry], suite: str) -> str:
    """The mirror URI to bootstrap ``suite`` from: an entry naming the suite, else any non-security Debian entry."""
    usable = [e for e in entries if e.uri.startswith(_SCHEMES) and not e.is_security]
    for entry in usable:
        if suite in entry.suites:
            return entry.uri.rstrip("/")
    for entry in usable:
        if "main" in entry.components:
            return entry.uri.rstrip("/")
    where = ", ".join(sorted({e.origin for e in entries})) or "no apt sources found"
    raise SourceError(
        f"no Debian mirror for {suite!r} in apt's configuration ({where}); "
        "set [qemu] debian_mirror (AIB_QEMU_DEBIAN_MIRROR) to a Debian mirror URL"
    )


async def find_mirror(suite: str, configured: str | None = None, apt_dir: Path = APT_DIR) -> str:
    """The configured mirror, else the one apt on this machine uses for ``suite``."""
    if configured:
        if not configured.startswith(_SCHEMES):
            raise SourceError(f"debian_mirror must be an http(s)/ftp/file URL, not {configured!r}")
        return configured.rstrip("/")
    entries = await anyio.to_thread.run_sync(read_apt_entries, apt_dir)
    return pick_mirror(entries, suite)


def release_date(text: str) -> datetime:
    """The ``Date:`` of a Debian ``Release``/``InRelease`` file, in UTC."""
    for stanza in _stanzas(text.replace("-----BEGIN PGP SIGNED MESSAGE-----", "")):
        value = stanza.get("date")
        if value:
            try:
                return parsedate_to_datetime(value).astimezone(UTC)
            except (TypeError, ValueError) as exc:
                raise SourceError(f"unreadable Release date {value!r}") from exc
    raise SourceError("the Release file has no Date field")


def version_of(date: datetime) -> str:
    """The ``exactVersion`` of a Debian image built from a Release of ``date``: ``20250510T085243Z``.

    This is snapshot.debian.org's timestamp form, so the version also names the archive state it came from.
    """
    return date.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def version_matches(requested: str, exact: str) -> bool:
    """Whether a requested version (``latest``, ``2025-05-10``, ``20250510``, ``20250510T085243Z``) names ``exact``."""
    if requested.strip().lower() == "latest":
        return True
    wanted = re.sub(r"[-:.\s]", "", requested.strip()).upper()
    return bool(wanted) and exact.upper().startswith(wanted)


async def fetch_release(mirror: str, suite: str, client: httpx.AsyncClient | None = None) -> str:
    """The text of ``<mirror>/dists/<suite>/Release``."""
    import httpx  # imported on first use: registering the provider does not load it

    url = f"{mirror}/dists/{suite}/Release"
    if mirror.startswith("file:"):
        path = Path(httpx.URL(url).path)
        try:
            return await anyio.Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceError(f"cannot read {url}: {exc}") from exc
    own = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=True)
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        raise SourceError(f"cannot fetch {url}: {exc}") from exc
    finally:
        if own:
            await http.aclose()
    if response.status_code != 200:
        raise SourceError(f"cannot fetch {url}: HTTP {response.status_code}")
    return response.text
