"""The fetcher: ``scriptUri``/``sourceUri`` content into the staging area, verified and cached by digest.

- ``--map-uri`` prefix rewriting first (the longest matching prefix wins);
- ``http(s)://`` through httpx: streamed, TLS verification on, retried with exponential backoff on connection
  errors, 408/429 and 5xx; ``file:///abs/path`` URIs and plain paths (relative ones against the template's folder);
- the sha256 is verified when given (:class:`~aib_sdk.errors.ChecksumError` otherwise), and content lands in
  ``<inputs>/<sha256>/<name>``; a second fetch of content whose checksum is known is served from there;
- progress events (task ``"download"``); URIs in events and errors have their query and credentials removed
  (SAS tokens are secrets).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse, urlunparse

import anyio

from aib_sdk.errors import ChecksumError, FetchError, UsageError
from aib_sdk.events import EventSink, Progress, null_sink
from aib_sdk.routing import local_file_path
from aib_sdk.trust import confine

if TYPE_CHECKING:
    import ssl

    import httpx

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 1 << 20
_PROGRESS_STEP = 4 << 20


def redact_uri(uri: str) -> str:
    """``uri`` without its query, fragment and user info (SAS tokens and passwords are secrets)."""
    parsed = urlparse(uri)
    if not parsed.scheme or parsed.scheme.lower() == "file":
        return uri
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    query = "<redacted>" if parsed.query else ""
    return urlunparse((parsed.scheme, netloc, parsed.path, "", query, ""))


def apply_uri_map(uri: str, uri_map: Mapping[str, str]) -> str:
    """Rewrite ``uri`` by the longest matching prefix of ``uri_map`` (``--map-uri``)."""
    for prefix in sorted(uri_map, key=len, reverse=True):
        if prefix and uri.startswith(prefix):
            return uri_map[prefix] + uri[len(prefix) :]
    return uri


def content_name(uri: str) -> str:
    """The file name under which ``uri``'s content is cached; refuses traversal (``..``, separators)."""
    raw = unquote(urlparse(uri).path) if urlparse(uri).scheme else uri
    name = PurePosixPath(raw.replace("\\", "/")).name if raw else ""
    if not name:
        return "download"
    if name in (".", "..") or "\x00" in name:
        raise FetchError(f"refusing unsafe file name {name!r} in {redact_uri(uri)}")
    return name


def _normalize_sha(sha256: str | None) -> str | None:
    if not sha256:
        return None
    value = sha256.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise UsageError(f"sha256Checksum must be 64 hex digits, got {sha256!r}")
    return value


class UriFetcher:
    """Implements :class:`aib_sdk.context.Fetcher` for one staging area's ``inputs`` directory."""

    def __init__(
        self,
        inputs: Path,
        *,
        emit: EventSink = null_sink,
        uri_map: Mapping[str, str] | None = None,
        base_directory: Path | None = None,
        attempts: int = 5,
        backoff: float = 0.5,
        timeout: float = 60.0,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        scratch: Path | None = None,
        context: Path | None = None,
    ) -> None:
        if verify is False:
            raise UsageError("TLS verification cannot be turned off; give a CA bundle instead")
        self.inputs = inputs
        self.emit = emit
        self.uri_map = dict(uri_map or {})
        self.base_directory = base_directory
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.timeout = timeout
        self.verify = verify
        self.transport = transport
        self.scratch = scratch
        """Where downloads in progress go (the run's ``work/``, which aib gc removes after a crash), else
        ``inputs``; it must be on the same filesystem as ``inputs``."""
        self.context = context
        """The build context (:mod:`aib_sdk.trust`): unmapped local paths must lie under it."""

    async def fetch(self, uri: str, sha256: str | None = None, *, label: str | None = None) -> Path:
        """Return a local path holding ``uri``'s content, its checksum verified."""
        expected = _normalize_sha(sha256)
        mapped = apply_uri_map(uri.strip(), self.uri_map)
        name = content_name(mapped)
        shown = label or redact_uri(uri)
        if expected is not None:
            cached = self.inputs / expected / name
            if await anyio.Path(cached).is_file():
                return cached
        scheme = urlparse(mapped).scheme.lower()
        if scheme in ("http", "https"):
            tmp, digest = await self._download(mapped, shown)
        elif scheme == "file" or not scheme:
            if self.context is not None and mapped == uri.strip():
                context, base = self.context, self.base_directory
                await anyio.to_thread.run_sync(lambda: confine(mapped, where=shown, context=context, base=base))
            tmp, digest = await self._copy_local(mapped, shown)
        else:
            raise FetchError(f"cannot fetch {redact_uri(uri)}: unsupported URI scheme {scheme!r}")
        if expected is not None and digest != expected:
            _discard(tmp)
            raise ChecksumError(redact_uri(uri), expected, digest)
        return await anyio.to_thread.run_sync(self._store, tmp, digest, name)

    def _store(self, tmp: Path, digest: str, name: str) -> Path:
        final = self.inputs / digest / name
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp.chmod(0o600)  # AIB_HOME is private (its folders are 0700 already)
        tmp.replace(final)
        return final

    def _tmp_path(self) -> Path:
        return (self.scratch or self.inputs) / f".partial-{secrets.token_hex(8)}"

    def _local_path(self, uri: str) -> Path:
        if urlparse(uri).scheme.lower() == "file":
            try:
                return local_file_path(uri)
            except UsageError as exc:
                raise FetchError(str(exc)) from exc
        path = Path(uri).expanduser()
        if not path.is_absolute():
            path = (self.base_directory or Path.cwd()) / path
        return path

    async def _copy_local(self, uri: str, shown: str) -> tuple[Path, str]:
        source = self._local_path(uri)
        tmp = self._tmp_path()

        def copy() -> tuple[str, int]:
            if not source.is_file():
                raise FetchError(f"cannot fetch {uri}: no such file {source}")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            done = 0
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    done += len(chunk)
            return digest.hexdigest(), done

        try:
            digest, size = await anyio.to_thread.run_sync(copy)
        except BaseException as exc:
            _discard(tmp)
            if isinstance(exc, OSError):
                raise FetchError(f"cannot fetch {uri}: {exc}") from exc
            raise
        self.emit(Progress(task="download", label=shown, done=size, total=size))
        return tmp, digest

    async def _download(self, uri: str, shown: str) -> tuple[Path, str]:
        last: str = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await anyio.sleep(self.backoff * 2 ** (attempt - 2))
            tmp = self._tmp_path()
            try:
                return tmp, await self._download_once(uri, shown, tmp)
            except _Retryable as exc:
                last = str(exc)
        raise FetchError(f"cannot fetch {redact_uri(uri)} after {self.attempts} attempts: {last}")

    async def _download_once(self, uri: str, shown: str, tmp: Path) -> str:
        import httpx  # imported on first download: it pulls in much (rich, via its CLI) that most runs never need

        await anyio.Path(tmp.parent).mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        try:
            async with (
                httpx.AsyncClient(
                    verify=self.verify, timeout=self.timeout, follow_redirects=True, transport=self.transport
                ) as client,
                client.stream("GET", uri) as response,
            ):
                if response.status_code in RETRY_STATUS:
                    raise _Retryable(f"HTTP {response.status_code}")
                if response.status_code >= 400:
                    raise FetchError(f"cannot fetch {redact_uri(uri)}: HTTP {response.status_code}")
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                done, reported = 0, 0
                file = await anyio.open_file(tmp, "wb")
                try:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        digest.update(chunk)
                        await file.write(chunk)
                        done += len(chunk)
                        if done - reported >= _PROGRESS_STEP:
                            reported = done
                            self.emit(Progress(task="download", label=shown, done=done, total=total))
                finally:
                    await file.aclose()
                if total is not None and done != total:
                    raise _Retryable(f"short read: {done} of {total} bytes")
                self.emit(Progress(task="download", label=shown, done=done, total=total))
        except httpx.TransportError as exc:
            _discard(tmp)
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            _discard(tmp)
            raise
        return digest.hexdigest()


class _Retryable(Exception):
    """A transient failure worth another attempt."""


def _discard(path: Path) -> None:
    """Remove a partial download (a tiny synchronous call, safe even while being cancelled)."""
    with contextlib.suppress(OSError):
        path.unlink()
