"""The ``DiskImage`` source: a local disk file used in place, or an http(s) image downloaded into the cache.

Downloads are streamed with httpx, resumable (a ``Range`` request continues a ``.part`` file after a cut
connection or an interrupted run), verified against ``sha256Checksum`` and cached digest-keyed under
``<cache>/images/<sha256>``, so the next build that names the same digest downloads nothing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal

import anyio
import anyio.to_thread
from pydantic import BaseModel

from aib_provider_qemu.specs import DiskImageSource as DiskImageSource  # re-exported: its former home
from aib_sdk import disks
from aib_sdk.artifacts import DiskFormat, DiskImage
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import ChecksumError, FetchError, SourceError, UsageError
from aib_sdk.fetch import RETRY_STATUS, apply_uri_map, redact_uri
from aib_sdk.routing import local_file_path, uri_scheme

if TYPE_CHECKING:
    import httpx  # imported on first download: registering the source does not load it

PROVIDER = "qemu"
CHUNK = 1 << 20
MAX_ATTEMPTS = 6


# Local files ---------------------------------------------------------------------------------------------------


def local_path(uri: str, base: Path | None) -> Path:
    """A ``file://`` URI or a plain path as an absolute local path; relative paths resolve against ``base``.

    Refuses ``..`` segments (no path traversal out of the template's directory).
    """
    if uri_scheme(uri) == "file":
        try:
            return local_file_path(uri)
        except UsageError as exc:
            raise SourceError(str(exc)) from exc
    path = PurePosixPath(uri)
    if ".." in path.parts:
        raise SourceError(f"image path must not contain '..': {uri!r}")
    if path.is_absolute():
        return Path(str(path))
    return (base or Path.cwd()) / str(path)


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


@asynccontextmanager
async def cache_lock(lock_file: Path) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (polled, so the event loop never blocks on it).

    Serializes builders of one cache entry across processes: the second waits, then finds the entry made.
    """
    fd = await anyio.to_thread.run_sync(lambda: os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644))
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            await anyio.sleep(0.5)
        yield
    finally:
        os.close(fd)


# Downloads -----------------------------------------------------------------------------------------------------


def _open_part(path: Path, append: bool) -> BinaryIO:
    return path.open("ab" if append else "wb")


def _write(fh: BinaryIO, digest: Any, chunk: bytes) -> None:
    fh.write(chunk)
    digest.update(chunk)


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` of a ``Content-Range: bytes START-END/TOTAL`` header."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = span.partition("-")[0]
    try:
        return int(start), (int(total) if total.isdigit() else None)
    except ValueError:
        return None, None


class _TransientHttpError(Exception):
    """A status worth retrying (408, 429, 5xx)."""


class _Download:
    """One resumable download of ``url`` into ``part`` with a running sha256."""

    def __init__(self, url: str, part: Path, ctx: RunContext, label: str) -> None:
        self.url, self.part, self.ctx, self.label = url, part, ctx, label
        self.shown = redact_uri(url)
        self.digest = hashlib.sha256()
        self.done = 0
        self.total: int | None = None
        self._last_report = 0.0

    async def prime(self) -> None:
        """Hash what an earlier attempt left in the ``.part`` file, so the download continues after it."""
        apart = anyio.Path(self.part)
        if await apart.exists():
            self.digest = await anyio.to_thread.run_sync(_rehash, self.part)
            self.done = (await apart.stat()).st_size
            if self.done:
                self.ctx.log("download", f"resuming {self.label} at byte {self.done}")

    def _restart(self) -> None:
        self.digest = hashlib.sha256()
        self.done = 0

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= 0.2:
            self._last_report = now
            self.ctx.progress("download", self.label, self.done, self.total)

    async def attempt(self, client: httpx.AsyncClient) -> bool:
        """One request; ``True`` when the whole body arrived (connection errors propagate)."""
        headers = {"Range": f"bytes={self.done}-"} if self.done else {}
        async with client.stream("GET", self.url, headers=headers) as response:
            if response.status_code == 416 and self.done:
                # Nothing left past our offset: the part file may already be complete (checked by the caller).
                self.total = self.done
                return True
            if response.status_code == 206:
                start, total = _content_range_start(response.headers.get("content-range"))
                if start != self.done:
                    raise FetchError(f"{self.shown}: server resumed at byte {start}, expected {self.done}")
                self.total = total
                append = True
            elif response.status_code == 200:
                if self.done:
                    self.ctx.log("download", f"{self.label}: server ignored the range request; starting over")
                self._restart()
                length = response.headers.get("content-length")
                self.total = int(length) if length and length.isdigit() else None
                append = False
            elif response.status_code in RETRY_STATUS:
                raise _TransientHttpError(f"HTTP {response.status_code} {response.reason_phrase}")
            else:
                raise FetchError(f"GET {self.shown}: HTTP {response.status_code} {response.reason_phrase}")
            fh = await anyio.to_thread.run_sync(_open_part, self.part, append)
            try:
                async for chunk in response.aiter_bytes(CHUNK):
                    await anyio.to_thread.run_sync(_write, fh, self.digest, chunk)
                    self.done += len(chunk)
                    self._report()
            finally:
                await anyio.to_thread.run_sync(fh.close)
        self._report(force=True)
        return self.total is None or self.done >= self.total


def _rehash(path: Path) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest


def _client(config: Config) -> httpx.AsyncClient:
    import httpx

    ca_bundle = config.get(PROVIDER, "ca_bundle")
    verify: Any = str(Path(ca_bundle).expanduser()) if ca_bundle else True
    return httpx.AsyncClient(
        verify=verify,
        follow_redirects=True,
        timeout=httpx.Timeout(30.0, read=60.0),
        headers={"User-Agent": "aib-sdk"},
    )


async def download_image(url: str, sha256: str, ctx: RunContext, *, label: str | None = None) -> Path:
    """Download ``url`` into ``<cache>/images/<sha256>`` (resuming, verified); return the cached path.

    With an empty ``sha256`` the image is downloaded (and cached by the digest it turns out to have) but not
    verified; a warning says so.
    """
    images = anyio.Path(ctx.cache_dir / "images")
    await images.mkdir(parents=True, exist_ok=True)
    import httpx

    shown = redact_uri(url)
    name = label or PurePosixPath(httpx.URL(url).path).name or "image"
    if sha256:
        final = images / sha256
        if await final.exists():
            ctx.log("download", f"{name}: cached as {sha256[:12]}")
            return Path(final)
        part = images / f"{sha256}.part"
    else:
        ctx.warn(f"image {shown} has no sha256Checksum: it is downloaded without verification")
        part = images / ("url-" + hashlib.sha256(url.encode()).hexdigest()[:32] + ".part")
    async with cache_lock(Path(f"{part}.lock")):
        if sha256 and await (images / sha256).exists():
            ctx.log("download", f"{name}: downloaded meanwhile by another build")
            return Path(images / sha256)
        return await _download(url, sha256, Path(part), ctx, name, shown)


async def _download(url: str, sha256: str, part: Path, ctx: RunContext, name: str, shown: str) -> Path:
    import httpx

    images = anyio.Path(part.parent)
    job = _Download(url, part, ctx, name)
    await job.prime()
    async with _client(ctx.config) as client:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                if await job.attempt(client):
                    break
                reason = f"connection closed at byte {job.done} of {job.total}"
            except (httpx.TransportError, _TransientHttpError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except httpx.HTTPError as exc:
                raise FetchError(f"GET {shown}: {exc}") from exc
            if attempt == MAX_ATTEMPTS:
                raise FetchError(f"GET {shown}: gave up after {attempt} attempts ({reason})")
            ctx.log("download", f"{name}: {reason}; resuming (attempt {attempt + 1})")
            await anyio.sleep(min(0.2 * 2**attempt, 5.0))
    actual = job.digest.hexdigest()
    if sha256 and actual != sha256:
        await anyio.Path(part).unlink(missing_ok=True)
        raise ChecksumError(shown, sha256, actual)
    final = images / actual
    await anyio.Path(part).rename(final)
    ctx.log("download", f"{name}: downloaded {job.done} bytes, sha256 {actual[:12]}")
    return Path(final)


# The source ----------------------------------------------------------------------------------------------------


def image_access(spec_access: str | None, config: Config) -> Literal["cloud-init", "static"]:
    """How the guest takes the build key: the spec's ``access``, else ``[qemu] access``, else cloud-init."""
    value = spec_access or config.get(PROVIDER, "access") or "cloud-init"
    if value not in ("cloud-init", "static"):
        raise UsageError(f"[qemu] access must be 'cloud-init' or 'static', not {value!r}")
    return "static" if value == "static" else "cloud-init"


def template_directory(ctx: RunContext) -> Path | None:
    """The folder relative paths of the template resolve against (the Builder's fetcher knows it)."""
    base = getattr(ctx.fetcher, "base_directory", None)
    return base if isinstance(base, Path) else ctx.options.base_directory


class UrlDiskSource:
    """Resolves ``DiskImage`` sources: local files in place, http(s) images through the download cache."""

    type_name: ClassVar[str] = "DiskImage"
    spec_model: ClassVar[type[BaseModel]] = DiskImageSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return isinstance(spec, DiskImageSource)

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        if not isinstance(spec, DiskImageSource):
            raise SourceError(f"UrlDiskSource cannot resolve {type(spec).__name__}")
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
            access=image_access(spec.access, ctx.config),
        )

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
