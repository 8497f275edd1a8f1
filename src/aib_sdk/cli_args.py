"""Parsers for ``aib`` option values: ``--param``, ``--timeout``, ``--source`` and ``--map-uri``.

Each raises :class:`~aib_sdk.errors.UsageError` with a message naming the option and the bad value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aib_sdk.errors import UsageError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# File extension → disk format of a --source path (others are asked of qemu-img).
SOURCE_FORMATS = {".qcow2": "qcow2", ".raw": "raw", ".vhd": "vpc", ".vpc": "vpc", ".vmdk": "vmdk"}


def parse_params(values: Iterable[str]) -> dict[str, str]:
    """``K=V`` pairs (``--param``); a later value for the same name wins."""
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param expects NAME=VALUE, got {item!r}")
        params[name.strip()] = value
    return params


def parse_timeout(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1h``, ``1h30m`` or ``1.5h`` (``--timeout``)."""
    value = text.strip().lower()
    pos, total = 0, 0.0
    units_seen: list[str] = []
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None:
            break
        number, unit = match.groups()
        if (not unit and (pos != 0 or match.end() != len(value))) or unit in units_seen:
            break
        units_seen.append(unit)
        total += float(number) * _UNITS[unit]
        pos = match.end()
    if not value or pos != len(value):
        raise UsageError(f"--timeout expects a duration such as 90, 90s, 5m or 1h, got {text!r}")
    if total <= 0:
        raise UsageError(f"--timeout must be longer than zero, got {text!r}")
    return total


def parse_map_uri(values: Iterable[str], *, cwd: Path | None = None) -> dict[str, str]:
    """``PREFIX=REPLACEMENT`` pairs (``--map-uri``); a folder path (relative to ``cwd``) becomes a ``file://`` URI.

    The split is at the first ``=`` followed by a URI or an absolute path, so prefixes may hold ``=`` (query
    strings). A ``file://`` replacement must be absolute and free of ``..``; a prefix ending in ``/`` keeps its
    replacement ending in ``/`` too.
    """
    from aib_sdk.routing import local_file_path

    mapping: dict[str, str] = {}
    for item in values:
        prefix = replacement = ""
        for match in re.finditer("=", item):
            rest = item[match.end() :]
            if _SCHEME.match(rest) or rest.startswith("/"):
                prefix, replacement = item[: match.start()], rest
                break
        if not replacement and "=" in item:  # a relative folder: split at the last '='
            prefix, _, replacement = item.rpartition("=")
        if not prefix or not replacement:
            raise UsageError(f"--map-uri expects PREFIX=file:///DIR/ (or PREFIX=URI, PREFIX=DIR), got {item!r}")
        if not _SCHEME.match(replacement):
            folder = Path(replacement).expanduser()
            keep_slash = replacement.endswith("/")
            replacement = (folder if folder.is_absolute() else (cwd or Path.cwd()) / folder).as_posix()
            replacement = "file://" + replacement + ("/" if keep_slash else "")
        if urlparse(replacement).scheme.lower() == "file":
            try:
                local_file_path(replacement)  # absolute, no '..'
            except UsageError as exc:
                raise UsageError(f"--map-uri {item!r}: {exc}") from None
        if prefix.endswith("/") and not replacement.endswith("/"):
            replacement += "/"
        mapping[prefix] = replacement
    return mapping


async def parse_source(text: str, *, cwd: Path | None = None) -> dict[str, Any]:
    """A source spec from ``--source``: a JSON object, a URL of a disk, or a local disk path.

    A path becomes ``{"type": "DiskImage", "uri": "file:///abs", "format": ...}`` with the format taken from the
    extension, else from ``qemu-img info``.
    """
    value = text.strip()
    if value.startswith("{"):
        try:
            spec = json.loads(value)
        except ValueError as exc:
            raise UsageError(f"--source is not valid JSON: {exc}") from exc
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise UsageError('--source JSON must be an object with a "type", e.g. {"type": "DiskImage", ...}')
        return spec
    if _SCHEME.match(value):
        spec = {"type": "DiskImage", "uri": value}
        fmt = SOURCE_FORMATS.get(Path(urlparse(value).path).suffix.lower())
        if fmt:
            spec["format"] = fmt
        return spec
    import anyio

    path = anyio.Path(Path(value).expanduser())
    if not path.is_absolute():
        path = anyio.Path(cwd or Path.cwd()) / path
    if not await path.is_file():
        raise UsageError(f"--source: no such disk file: {value}")
    resolved = Path(await path.resolve())
    fmt = SOURCE_FORMATS.get(resolved.suffix.lower())
    if fmt is None:
        from aib_sdk import disks
        from aib_sdk.errors import BuildError

        try:
            fmt = (await disks.info(resolved)).format
        except BuildError as exc:
            raise UsageError(f"--source: cannot read {value} as a disk: {exc}") from exc
    return {"type": "DiskImage", "uri": resolved.as_uri(), "format": fmt}
