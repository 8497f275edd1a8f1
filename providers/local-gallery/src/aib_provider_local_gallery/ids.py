"""Local ARM-shaped ids (subscription ``local``) and the name rules of Azure Compute Gallery resources.

Every name that ends up as a directory passes one of these patterns, which admit no ``/`` and no name made of
dots only, so an id can never reach outside the gallery root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aib_sdk.errors import UsageError
from aib_sdk.routing import LOCAL_SUBSCRIPTION, parse_arm_id

_PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "resource group": (
        re.compile(r"^[-\w.()]{0,89}[-\w()]$"),
        "1-90 letters, digits, '-', '_', '.', '()', not ending in '.'",
    ),
    "gallery": (
        re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._]{0,78}[A-Za-z0-9])?$"),
        "1-80 letters, digits, '_' and '.', starting and ending with a letter or digit",
    ),
    "image definition": (
        re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9])?$"),
        "1-80 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
    ),
    "managed image": (
        re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?$"),
        "1-80 letters, digits, '-', '_' and '.', starting with a letter or digit",
    ),
    "region": (re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"), "1-64 letters, digits, '-' and '_'"),
    "publisher/offer/sku": (
        re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_])?$"),
        "1-128 letters, digits, '-', '_' and '.'",
    ),
}
_VERSION = re.compile(r"^(0|[1-9]\d{0,9})\.(0|[1-9]\d{0,9})\.(0|[1-9]\d{0,9})$")
_INT32_MAX = 2**31 - 1


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid ``kind`` name (see ``_PATTERNS``); raise :class:`UsageError` otherwise."""
    pattern, rule = _PATTERNS[kind]
    if not pattern.match(value):
        raise UsageError(f"invalid {kind} name {value!r}: {rule}")
    return value


def parse_version(value: str) -> tuple[int, int, int]:
    """``"1.2.3"`` → ``(1, 2, 3)``; each part a non-negative 32-bit integer, as in Azure Compute Gallery."""
    match = _VERSION.match(value)
    if not match or any(int(p) > _INT32_MAX for p in match.groups()):
        raise UsageError(f"invalid image version {value!r}: expected MAJOR.MINOR.PATCH (32-bit integers)")
    return int(match[1]), int(match[2]), int(match[3])


def format_version(parts: tuple[int, int, int]) -> str:
    return ".".join(str(p) for p in parts)


def _compute_id(resource_group: str, rest: str) -> str:
    """``/subscriptions/local/resourceGroups/<rg>/providers/Microsoft.Compute/<rest>``."""
    return f"/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/{resource_group}/providers/Microsoft.Compute/{rest}"


@dataclass(frozen=True)
class GalleryImageRef:
    """``…/galleries/<gallery>/images/<definition>[/versions/<version>]`` in subscription ``local``."""

    resource_group: str
    gallery: str
    definition: str
    version: str | None = None  # a version, "latest", or None for the definition itself

    @property
    def gallery_id(self) -> str:
        return _compute_id(self.resource_group, f"galleries/{self.gallery}")

    @property
    def definition_id(self) -> str:
        return f"{self.gallery_id}/images/{self.definition}"

    @property
    def id(self) -> str:
        return self.definition_id + (f"/versions/{self.version}" if self.version else "")

    def with_version(self, version: str | None) -> GalleryImageRef:
        return GalleryImageRef(self.resource_group, self.gallery, self.definition, version)


@dataclass(frozen=True)
class ManagedImageRef:
    """``…/providers/Microsoft.Compute/images/<name>`` in subscription ``local``."""

    resource_group: str
    name: str

    @property
    def id(self) -> str:
        return _compute_id(self.resource_group, f"images/{self.name}")


@dataclass(frozen=True)
class GalleryRef:
    """``…/providers/Microsoft.Compute/galleries/<gallery>`` in subscription ``local``."""

    resource_group: str
    gallery: str

    @property
    def id(self) -> str:
        return _compute_id(self.resource_group, f"galleries/{self.gallery}")


LocalRef = GalleryRef | GalleryImageRef | ManagedImageRef


def parse_local_id(value: str) -> LocalRef:
    """Parse a local id (gallery, definition, version or managed image), checking every name in it."""
    arm = parse_arm_id(value)
    if arm is None or not arm.is_local:
        raise UsageError(f"not a local gallery id: {value!r} (expected /subscriptions/local/resourceGroups/…)")
    if arm.namespace.lower() != "microsoft.compute":
        raise UsageError(f"not a Microsoft.Compute id: {value!r}")
    rg = check_name("resource group", arm.resource_group)
    kinds = tuple(k.lower() for k, _ in arm.segments)
    names = [v for _, v in arm.segments]
    if kinds == ("images",):
        return ManagedImageRef(rg, check_name("managed image", names[0]))
    if kinds and kinds == ("galleries", "images", "versions")[: len(kinds)]:
        gallery = check_name("gallery", names[0])
        if len(kinds) == 1:
            return GalleryRef(rg, gallery)
        definition = check_name("image definition", names[1])
        version = None
        if len(kinds) == 3:
            version = names[2]
            if version.lower() == "latest":
                version = "latest"
            else:
                parse_version(version)
        return GalleryImageRef(rg, gallery, definition, version)
    raise UsageError(f"unsupported local resource id: {value!r}")


def parse_gallery_image_id(value: str) -> GalleryImageRef:
    """A definition or version id (what ``galleryImageId`` and ``imageVersionId`` hold)."""
    ref = parse_local_id(value)
    if not isinstance(ref, GalleryImageRef):
        raise UsageError(f"not a gallery image definition or version id: {value!r}")
    return ref


def parse_managed_image_id(value: str) -> ManagedImageRef:
    ref = parse_local_id(value)
    if not isinstance(ref, ManagedImageRef):
        raise UsageError(f"not a managed image id: {value!r}")
    return ref
