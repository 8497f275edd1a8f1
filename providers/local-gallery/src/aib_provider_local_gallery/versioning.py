"""Version numbers of gallery image versions: AIB's ``Latest`` and ``Source`` schemes, and ``latest`` resolution."""

from __future__ import annotations

from collections.abc import Iterable

from aib_provider_local_gallery.ids import format_version, parse_version
from aib_sdk.errors import DistributeError, UsageError

Version = tuple[int, int, int]


def next_latest(existing: Iterable[str], major: int = -1) -> str:
    """The next version after the latest one (within ``major`` when it is not -1).

    Every existing version counts, excluded-from-latest ones too, so the result never collides. With nothing to
    follow, the first version is ``<major or 0>.0.1``. AIB's example, existing 0.1.1…2.1.0: unset or 2 → 2.1.1;
    1 → 1.2.1; 0 → 0.1.3.
    """
    versions = [parse_version(v) for v in existing]
    if major >= 0:
        versions = [v for v in versions if v[0] == major]
    if not versions:
        return format_version((max(major, 0), 0, 1))
    top = max(versions)
    return format_version((top[0], top[1], top[2] + 1))


def from_source(source_version: str | None) -> str:
    """The version a ``Source`` scheme derives: the source's own ``MAJOR.MINOR.PATCH``.

    A source version such as ``12.20241105.1`` is used as is; one that is not three dot-separated 32-bit numbers
    (a Debian mirror date ``20241105``, a platform ``20.04.202411050``) is refused with the reason.
    """
    if not source_version:
        raise DistributeError(
            "versioning scheme 'Source' needs a source image with a version (a SharedImageVersion or a "
            "PlatformImage whose exactVersion is MAJOR.MINOR.PATCH); use scheme 'Latest' instead"
        )
    try:
        return format_version(parse_version(source_version))
    except UsageError as exc:
        raise DistributeError(
            f"versioning scheme 'Source': the source version {source_version!r} is not a gallery version "
            f"(MAJOR.MINOR.PATCH, 32-bit integers); use scheme 'Latest' or an explicit version"
        ) from exc


def latest_of(versions: Iterable[tuple[str, bool]]) -> str | None:
    """The highest version among ``(version, excluded_from_latest)`` pairs that is not excluded."""
    candidates = [parse_version(v) for v, excluded in versions if not excluded]
    return format_version(max(candidates)) if candidates else None
