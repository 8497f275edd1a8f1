"""The publisher catalogue: marketplace ``PlatformImage`` names mapped to downloadable disk images.

Only Debian is built locally (:mod:`aib_provider_qemu.debian`). Any other publisher (Canonical, RedHat,
MicrosoftWindowsServer …) resolves through the ``[qemu.catalogue]`` table of ``aib.toml``, which maps
``"Publisher:Offer:Sku"`` (or ``"Publisher:Offer:Sku:Version"`` for one version) to an image that
:class:`~aib_provider_qemu.url_source.UrlDiskSource` downloads and verifies::

    [qemu.catalogue]
    "Canonical:0001-com-ubuntu-server-jammy:22_04-lts" = { uri = "https://…/jammy.qcow2", sha256 = "…" }
    "MicrosoftWindowsServer:WindowsServer:2022-datacenter" = { uri = "file:///images/ws2022.vhd", format = "vpc",
                                                              osType = "Windows", hyperVGeneration = "V2" }

Entries may also carry ``version`` (reported as ``exactVersion``), ``kernel``, ``initrd``, ``kernelArgs``,
``diskInterface`` and ``access``. The table can be given as JSON in ``AIB_QEMU_CATALOGUE`` too. Without an
entry, the build fails with an error that names ``--source`` and this table.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from aib_provider_qemu.specs import DiskImageSource
from aib_provider_qemu.url_source import UrlDiskSource
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import SourceError, UsageError
from aib_sdk.models.specs import PlatformImageSource

# Publishers other sources of this provider answer for.
LOCAL_PUBLISHERS = frozenset({"debian", "aib-sdk"})
_ENTRY_KEYS = {
    "uri": "uri",
    "sha256": "sha256Checksum",
    "sha256checksum": "sha256Checksum",
    "format": "format",
    "ostype": "osType",
    "hypervgeneration": "hyperVGeneration",
    "kernel": "kernel",
    "initrd": "initrd",
    "kernelargs": "kernelArgs",
    "diskinterface": "diskInterface",
    "access": "access",
}


def catalogue(config: Config) -> dict[str, dict[str, Any]]:
    """The ``[qemu.catalogue]`` table (or ``AIB_QEMU_CATALOGUE`` as JSON), keys lower-cased."""
    table = config.get("qemu", "catalogue") or {}
    if isinstance(table, str):
        try:
            table = json.loads(table)
        except json.JSONDecodeError as exc:
            raise UsageError(f"AIB_QEMU_CATALOGUE is not a JSON object: {exc}") from exc
    if not isinstance(table, dict):
        raise UsageError('[qemu.catalogue] must be a table of "Publisher:Offer:Sku" = { uri = … }')
    return {str(k).lower(): v for k, v in table.items() if isinstance(v, dict)}


def catalogue_key(spec: PlatformImageSource, *, version: bool = False) -> str:
    parts = [spec.publisher or "", spec.offer or "", spec.sku or ""]
    if version:
        parts.append(spec.version or "latest")
    return ":".join(parts)


def find_entry(spec: PlatformImageSource, config: Config) -> tuple[str, dict[str, Any]] | None:
    """The catalogue entry for ``spec``: a versioned key first, then the unversioned one."""
    table = catalogue(config)
    for key in (catalogue_key(spec, version=True), catalogue_key(spec)):
        entry = table.get(key.lower())
        if entry is not None:
            return key, entry
    return None


def disk_spec(key: str, entry: dict[str, Any]) -> DiskImageSource:
    """The ``DiskImage`` spec a catalogue entry stands for."""
    data: dict[str, Any] = {"type": "DiskImage"}
    for name, value in entry.items():
        field = _ENTRY_KEYS.get(str(name).lower())
        if field is None and str(name).lower() != "version":
            raise UsageError(f"[qemu.catalogue] {key!r}: unknown key {name!r} (known: uri, sha256, format, osType, …)")
        if field is not None:
            data[field] = value
    try:
        return DiskImageSource.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"[qemu.catalogue] {key!r}: {problems}") from exc


def unavailable(spec: PlatformImageSource) -> SourceError:
    """The error for a platform image that cannot be had offline, saying both ways out."""
    name = "/".join(str(p) for p in (spec.publisher, spec.offer, spec.sku, spec.version or "latest"))
    key = catalogue_key(spec)
    return SourceError(
        f"PlatformImage {name} is not available locally: the qemu provider builds only publisher Debian "
        "(offer debian-12, sku 12 or 12-gen2) itself. Either replace the source with --source (a disk path, or a "
        'JSON spec such as \'{"type": "DiskImage", "uri": "https://…/image.qcow2", "sha256Checksum": "…"}\'), '
        f"or map this image to a download in aib.toml:\n  [qemu.catalogue]\n"
        f'  "{key}" = {{ uri = "https://…/image.qcow2", sha256 = "…", format = "qcow2" }}'
    )


class CataloguePlatformSource:
    """``PlatformImage`` of any publisher but Debian: the catalogue's image, or a clear error."""

    type_name: ClassVar[str] = "PlatformImage"
    spec_model: ClassVar[type[BaseModel]] = PlatformImageSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        if not isinstance(spec, PlatformImageSource):
            return False
        return find_entry(spec, config) is not None

    @classmethod
    def explain_unclaimed(cls, spec: BaseModel, config: Config) -> str | None:
        """For a publisher no source builds: how to go on (``--source`` or a catalogue entry)."""
        if not isinstance(spec, PlatformImageSource) or (spec.publisher or "").lower() in LOCAL_PUBLISHERS:
            return None
        return str(unavailable(spec))

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        if not isinstance(spec, PlatformImageSource):
            raise SourceError(f"CataloguePlatformSource cannot resolve {type(spec).__name__}")
        found = find_entry(spec, ctx.config)
        if found is None:
            raise unavailable(spec)
        key, entry = found
        version = entry.get("version")
        wanted = (spec.version or "latest").strip()
        if version is not None and wanted.lower() != "latest" and wanted != str(version):
            raise SourceError(f"[qemu.catalogue] {key!r} holds version {version}, not the requested {wanted}")
        if version is None and wanted.lower() != "latest":
            version = spec.version
        ctx.log("catalogue", f"PlatformImage {key} → {entry.get('uri')}")
        image = await UrlDiskSource().resolve(disk_spec(key, entry), ctx)
        exact = str(version) if version is not None else f"sha256:{image.sha256}" if image.sha256 else None
        return dataclasses.replace(image, exact_version=exact, attributes={**image.attributes, "catalogue": key})
