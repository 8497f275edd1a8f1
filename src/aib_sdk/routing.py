"""Which provider a target belongs to, decided from its id or URI, and the build profiles that redirect them.

- ``/subscriptions/local/…`` → local-gallery; any other ARM id → azure;
- ``VHD``/``DiskFile`` with ``file:///abs/path`` → the core; ``s3://…`` → s3-vhd; ``https://<account>.blob.…`` or a
  configured blob endpoint → azure; ``VHD`` with no ``uri`` → ``<run staging>/<runOutputName>.vhd``.
- ``--profile local`` rewrites every Azure ARM id (sources and targets) to subscription ``local``, keeping names.

Distributors and sources implement ``claims`` with these helpers so that the rule lives in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from aib_sdk.errors import UsageError

LOCAL_SUBSCRIPTION = "local"

_ARM_ID = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<rest>.+)$", re.I)

# Fields holding ARM ids that a profile may rewrite (source and distribute entries).
ARM_ID_FIELDS = ("imageId", "imageVersionId", "galleryImageId")


@dataclass(frozen=True)
class ArmId:
    """A parsed ARM resource id: subscription, resource group, and the ``(type, name)`` pairs after the provider."""

    subscription: str
    resource_group: str
    namespace: str
    segments: tuple[tuple[str, str], ...]

    @property
    def is_local(self) -> bool:
        return self.subscription.lower() == LOCAL_SUBSCRIPTION

    def get(self, kind: str) -> str | None:
        """The name following the segment ``kind`` (case-insensitive), e.g. ``get("galleries")``."""
        for key, value in self.segments:
            if key.lower() == kind.lower():
                return value
        return None

    def __str__(self) -> str:
        tail = "/".join(f"{k}/{v}" for k, v in self.segments)
        head = f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
        return f"{head}/providers/{self.namespace}/{tail}"


def parse_arm_id(value: str) -> ArmId | None:
    """Parse ``value`` as an ARM id; ``None`` if it is not one."""
    match = _ARM_ID.match(value.strip())
    if not match:
        return None
    parts = match["rest"].split("/")
    if len(parts) < 3 or len(parts) % 2 == 0:
        return None
    namespace, pairs = parts[0], parts[1:]
    segments = tuple((pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2))
    return ArmId(match["sub"], match["rg"], namespace, segments)


def is_local_arm_id(value: str | None) -> bool:
    parsed = parse_arm_id(value) if value else None
    return parsed is not None and parsed.is_local


def is_azure_arm_id(value: str | None) -> bool:
    parsed = parse_arm_id(value) if value else None
    return parsed is not None and not parsed.is_local


def uri_scheme(uri: str | None) -> str:
    """The lower-cased scheme of ``uri`` (``""`` for none)."""
    return urlparse(uri).scheme.lower() if uri else ""


def local_file_path(uri: str) -> Path:
    """The absolute path of a ``file:///abs/path`` URI; refuses relative paths and ``..`` segments."""
    parsed = urlparse(uri)
    if parsed.scheme.lower() != "file" or parsed.netloc not in ("", "localhost"):
        raise UsageError(f"not a local file URI: {uri!r} (expected file:///absolute/path)")
    path = PurePosixPath(unquote(parsed.path))
    if not path.is_absolute():
        raise UsageError(f"file URI must hold an absolute path: {uri!r}")
    if ".." in path.parts:
        raise UsageError(f"file URI must not contain '..': {uri!r}")
    return Path(str(path))


def rewrite_to_local(value: str) -> str:
    """An Azure ARM id with its subscription replaced by ``local`` (other values unchanged)."""
    match = _ARM_ID.match(value.strip())
    if not match:
        return value
    return f"/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/{match['rg']}/providers/{match['rest']}"


def apply_profile(properties: dict[str, Any], profile: str | None) -> dict[str, Any]:
    """Return ``properties`` (template JSON) rewritten by a build profile.

    ``local``: every ARM id of the source and the targets moves to subscription ``local``. Other profile names are
    accepted when they only carry configuration; they rewrite nothing here.
    """
    if profile != "local":
        return properties
    out = dict(properties)

    def fix(entry: Any) -> Any:
        if not isinstance(entry, dict):
            return entry
        fixed = dict(entry)
        for key in ARM_ID_FIELDS:
            if isinstance(fixed.get(key), str):
                fixed[key] = rewrite_to_local(fixed[key])
        return fixed

    if "source" in out:
        out["source"] = fix(out["source"])
    if isinstance(out.get("distribute"), list):
        out["distribute"] = [fix(d) for d in out["distribute"]]
    return out
