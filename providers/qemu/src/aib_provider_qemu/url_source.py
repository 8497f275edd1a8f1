"""The ``DiskImage`` source: a local disk file used in place, or an http(s) image downloaded into the cache.

Downloads are streamed with httpx, resumable (a ``Range`` request continues a ``.part`` file after a cut
connection or an interrupted run), verified against ``sha256Checksum`` and cached digest-keyed under
``<cache>/images/<sha256>``, so the next build that names the same digest downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread

from aib_provider_qemu.specs import DiskImageSource as DiskImageSource  # re-exported: its former home
from aib_sdk import disks
from aib_sdk.artifacts import DiskFormat, DiskImage
from aib_sdk.bases import SourceBase
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import ChecksumError, FetchError, SourceError, UsageError
from aib_sdk.fetch import apply_uri_map, redact_uri
from aib_sdk.routing import uri_scheme
from aib_sdk.runtime.download import download_verified, file_lock
from aib_sdk.runtime.download import local_path as runtime_local_path
from aib_sdk.runtime.retry import RetryPolicy

if TYPE_CHECKING:
    import httpx  # imported on first download: registering the source does not load it

PROVIDER = "qemu"
DOWNLOAD_POLICY = RetryPolicy(attempts=6, base=0.4, cap=5.0)
# Local files ---------------------------------------------------------------------------------------------------


def local_path(uri: str, base: Path | None) -> Path:
    """The runtime's one path rule (:func:`aib_sdk.runtime.download.local_path`), failing as a :class:`SourceError`."""
    try:
        return runtime_local_path(uri, base)
    except FetchError as exc:
        raise SourceError(str(exc)) from exc


def _sniff_format(path: Path) -> DiskFormat:
    """The disk format told by the file's magic bytes (raw when none matches)."""
    with path.open("rb") as fh:
        head = fh.read(512)
        size = fh.seek(0, os.SEEK_END)
        tail = b""
        if size >= 512:
            fh.seek(size - 512)
            tail = fh.read(512)
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith(b"KDMV") or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head.startswith(b"conectix") or tail.startswith(b"conectix") or tail[1:].startswith(b"conectix"):
        return "vpc"
    return "raw"


async def check_format(path: Path, declared: DiskFormat | None) -> DiskFormat:
    """The image's format: the declared one when the content agrees, else a :class:`SourceError`.

    A file declared ``raw`` that carries an image header is refused: the guest would see the container, and a
    qcow2 header could name a backing file on the host.
    """
    found = await anyio.to_thread.run_sync(_sniff_format, path)
    if declared is None:
        return found
    if declared == "raw" and found != "raw":
        raise SourceError(f'{path} is declared raw but holds a {found} image; set "format": "{found}"')
    if declared != "raw" and found != declared:
        raise SourceError(f"{path} is declared {declared} but is {found}")
    return declared


# Downloads -----------------------------------------------------------------------------------------------------


def _client(ctx: RunContext) -> httpx.AsyncClient:
    import httpx

    ca_bundle = ctx.config.get(PROVIDER, "ca_bundle")
    return ctx.http_client(
        retry=False,  # download_verified retries (and resumes) itself
        verify=str(Path(ca_bundle).expanduser()) if ca_bundle else True,
        timeout=httpx.Timeout(30.0, read=60.0),
    )


async def download_image(url: str, sha256: str, ctx: RunContext, *, label: str | None = None) -> Path:
    """Download ``url`` into ``<cache>/images/<sha256>`` (resuming, verified); return the cached path.

    With an empty ``sha256`` the image is downloaded (and cached by the digest it turns out to have) but not
    verified; a warning says so.
    """
    from urllib.parse import urlparse

    images = anyio.Path(ctx.cache_dir / "images")
    await images.mkdir(parents=True, exist_ok=True)
    shown = redact_uri(url)
    name = label or PurePosixPath(urlparse(url).path).name or "image"
    if sha256:
        final = images / sha256
        if await final.exists():
            ctx.log("download", f"{name}: cached as {sha256[:12]}")
            return Path(final)
        part = images / f"{sha256}.part"
    else:
        ctx.warn(f"image {shown} has no sha256Checksum: it is downloaded without verification")
        part = images / ("url-" + hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")
    async with file_lock(Path(f"{part}.lock")):
        if sha256 and await (images / sha256).exists():
            ctx.log("download", f"{name}: downloaded meanwhile by another build")
            return Path(images / sha256)
        async with _client(ctx) as client:
            actual, size = await download_verified(
                client,
                url,
                Path(part),
                sha256 or None,
                shown=shown,
                policy=DOWNLOAD_POLICY,
                progress=lambda done, total: ctx.progress("download", name, done, total),
                log=lambda line: ctx.log("download", f"{name}: {line}"),
            )
        final = images / actual
        await anyio.Path(part).rename(final)
        ctx.log("download", f"{name}: downloaded {size} bytes, sha256 {actual[:12]}")
        return Path(final)


# The source ----------------------------------------------------------------------------------------------------


def image_access(spec_access: str | None, config: Config) -> Literal["cloud-init", "static"]:
    """How the guest takes the build key: the spec's ``access``, else ``[qemu] access``; else ``static`` when the
    static-access settings (``ssh_user`` and ``ssh_private_key``) are given, else cloud-init."""
    static_settings = bool(config.get(PROVIDER, "ssh_user") and config.get(PROVIDER, "ssh_private_key"))
    value = spec_access or config.get(PROVIDER, "access") or ("static" if static_settings else "cloud-init")
    if value not in ("cloud-init", "static"):
        raise UsageError(f"[qemu] access must be 'cloud-init' or 'static', not {value!r}")
    return "static" if value == "static" else "cloud-init"


def template_directory(ctx: RunContext) -> Path | None:
    """The folder relative paths of the template resolve against (the Builder's fetcher knows it)."""
    base = getattr(ctx.fetcher, "base_directory", None)
    return base if isinstance(base, Path) else ctx.options.base_directory


class UrlDiskSource(SourceBase[DiskImageSource]):
    """Resolves ``DiskImage`` sources: local files in place, http(s) images through the download cache."""

    async def resolve(self, spec: DiskImageSource, ctx: RunContext) -> DiskImage:
        uri = apply_uri_map(spec.uri, ctx.options.uri_map)
        base = template_directory(ctx)
        scheme = uri_scheme(uri)
        if scheme in ("http", "https"):
            path = await download_image(uri, spec.sha256_checksum, ctx)
            digest = path.name
        elif scheme in ("", "file"):
            path = local_path(uri, base)
            if not await anyio.Path(path).is_file():
                raise SourceError(f"source disk not found: {path}")
            digest = await disks.cached_sha256(
                path, ctx.cache_dir, lambda done, total: ctx.progress("verify", path.name, done, total)
            )
            if spec.sha256_checksum and digest != spec.sha256_checksum:
                raise ChecksumError(uri, spec.sha256_checksum, digest)
        else:
            raise SourceError(
                f"unsupported DiskImage uri scheme {scheme!r} in {redact_uri(spec.uri)!r} (use file:// or https://)"
            )
        fmt = await check_format(path, spec.format)
        await disks.check_self_contained(path, fmt, what="DiskImage source")
        kernel = await self._boot_file(spec.kernel, "kernel", base)
        initrd = await self._boot_file(spec.initrd, "initrd", base)
        if spec.initrd and not spec.kernel:
            raise SourceError("DiskImage: 'initrd' needs 'kernel'")
        return DiskImage(
            path=path,
            format=fmt,
            os_type=spec.os_type,
            hyper_v_generation=spec.hyper_v_generation,
            sha256=digest,
            kernel=kernel,
            initrd=initrd,
            kernel_args=spec.kernel_args,
            disk_interface=spec.disk_interface,
            access=self._access(spec, ctx),
        )

    @staticmethod
    def _access(spec: DiskImageSource, ctx: RunContext) -> Literal["cloud-init", "static"]:
        access = image_access(spec.access, ctx.config)
        if access == "static" and not spec.access and not ctx.config.get(PROVIDER, "access"):
            ctx.log("source", 'DiskImage: access "static" (the ssh_user and ssh_private_key settings are given)')
        return access

    @staticmethod
    async def _boot_file(uri: str | None, what: str, base: Path | None) -> Path | None:
        if not uri:
            return None
        if uri_scheme(uri) not in ("", "file"):
            raise SourceError(f"DiskImage {what} must be a local file (file:///…), not {uri!r}")
        path = local_path(uri, base)
        if not await anyio.Path(path).is_file():
            raise SourceError(f"DiskImage {what} not found: {path}")
        return path
