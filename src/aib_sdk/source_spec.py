"""What ``--source`` / ``BuildOptions.source`` accept: a JSON spec, a disk URL, or a local disk path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio

from aib_sdk.errors import BuildError, UsageError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
SOURCE_FORMATS = {".qcow2": "qcow2", ".raw": "raw", ".vhd": "vpc", ".vpc": "vpc", ".vmdk": "vmdk"}


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
    path = anyio.Path(Path(value).expanduser())
    if not path.is_absolute():
        path = anyio.Path(cwd or Path.cwd()) / path
    if not await path.is_file():
        raise UsageError(f"--source: no such disk file: {value}")
    resolved = Path(await path.resolve())
    fmt = SOURCE_FORMATS.get(resolved.suffix.lower())
    if fmt is None:
        from aib_sdk import disks

        try:
            fmt = (await disks.info(resolved)).format
        except BuildError as exc:
            raise UsageError(f"--source: cannot read {value} as a disk: {exc}") from exc
    return {"type": "DiskImage", "uri": resolved.as_uri(), "format": fmt}
