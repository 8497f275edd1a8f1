"""The one verified download, and the one rule for local paths a template names.

- :func:`local_path`: ``file:///abs/path`` or a plain path (relative to the template's folder). An absolute path
  with ``..`` and a leading ``~`` are refused (a template is not a shell); a relative path may use ``..``, and the
  build context (:func:`aib_sdk.trust.confine`, checked before the run) decides whether where it leads is allowed.
- :func:`download_verified`: an http(s) download into a ``.part`` file, resumed with a ``Range`` request after a
  cut connection or an interrupted run, retried by the one :func:`~aib_sdk.runtime.retry.retrying`, its sha256
  verified; the caller moves the part file to its final, digest-keyed place.
- :func:`file_lock`: an exclusive ``flock`` held while one process fills a cache entry.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlparse

import anyio
import anyio.to_thread

from aib_sdk.errors import ChecksumError, FetchError

from .retry import DEFAULT_POLICY, RETRY_STATUS, RetriesExhausted, RetryableError, RetryPolicy, retry_after, retrying

if TYPE_CHECKING:
    import httpx  # only a download needs it: the path rule and the lock do not load the HTTP stack

CHUNK = 1 << 20
ProgressCallback = Callable[[int, "int | None"], None]
LogCallback = Callable[[str], None]


def local_path(uri: str, base: Path | None = None) -> Path:
    """The absolute local path of ``file:///abs/path`` or a plain path; relative paths resolve against ``base``
    (the template's folder; the working directory when ``None``).

    Raises :class:`FetchError` for ``..`` in an absolute path, a leading ``~`` (not expanded), a relative or remote
    ``file:`` URI. ``..`` in a relative path is kept: whether it may leave the template's folder is the build
    context's call (:mod:`aib_sdk.trust`).
    """
    text = uri.strip()
    parsed = urlparse(text)
    if parsed.scheme.lower() == "file":
        if parsed.netloc not in ("", "localhost"):
            raise FetchError(f"not a local file URI: {text!r} (expected file:///absolute/path)")
        path = PurePosixPath(unquote(parsed.path))
        if not path.is_absolute():
            raise FetchError(f"file URI must hold an absolute path: {text!r}")
    else:
        path = PurePosixPath(text)
    if path.is_absolute() and ".." in path.parts:
        raise FetchError(f"an absolute path must not contain '..': {text!r}")
    if path.parts and path.parts[0].startswith("~"):
        raise FetchError(f"'~' is not expanded in template paths: {text!r} (give an absolute path)")
    if path.is_absolute():
        return Path(str(path))
    return (base or Path.cwd()) / str(path)


@asynccontextmanager
async def file_lock(lock_file: Path) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (polled, so the event loop never blocks on it).

    Serializes fillers of one cache entry across processes: the second waits, then finds the entry made.
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


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` of a ``Content-Range: bytes START-END/TOTAL`` header."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    try:
        return int(span.partition("-")[0]), (int(total) if total.isdigit() else None)
    except ValueError:
        return None, None


def _rehash(path: Path) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest


def _write(fh: BinaryIO, digest: Any, chunk: bytes) -> None:
    fh.write(chunk)
    digest.update(chunk)


class _Transfer:
    """One resumable download of ``url`` into ``part`` with a running sha256."""

    def __init__(self, url: str, part: Path, shown: str, progress: ProgressCallback | None) -> None:
        self.url, self.part, self.shown, self.progress = url, part, shown, progress
        self.digest = hashlib.sha256()
        self.done = 0
        self.total: int | None = None
        self._last_report = 0.0

    async def prime(self) -> None:
        """Hash what an earlier attempt left in the part file, so the download continues after it."""
        apart = anyio.Path(self.part)
        if await apart.exists():
            self.digest = await anyio.to_thread.run_sync(_rehash, self.part)
            self.done = (await apart.stat()).st_size

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self._last_report >= 0.2):
            self._last_report = now
            self.progress(self.done, self.total)

    async def attempt(self, client: httpx.AsyncClient, log: LogCallback) -> None:
        """One request continuing at ``done``; raises :class:`RetryableError` when the body came short."""
        headers = {"Range": f"bytes={self.done}-"} if self.done else {}
        async with client.stream("GET", self.url, headers=headers) as response:
            status = response.status_code
            if status == 416 and self.done:
                self.total = self.done  # nothing past our offset: the part may be whole (the digest tells)
                return
            if status == 206:
                start, self.total = _content_range(response.headers.get("content-range"))
                if start != self.done:
                    raise FetchError(f"{self.shown}: server resumed at byte {start}, expected {self.done}")
                append = True
            elif status == 200:
                if self.done:
                    log("the server ignored the range request; starting over")
                self.digest, self.done = hashlib.sha256(), 0
                length = response.headers.get("content-length")
                self.total = int(length) if length and length.isdigit() else None
                append = False
            elif status in RETRY_STATUS:
                raise RetryableError(f"HTTP {status}", retry_after=retry_after(response.headers))
            else:
                raise FetchError(f"cannot fetch {self.shown}: HTTP {status} {response.reason_phrase}".rstrip())
            fh = await anyio.to_thread.run_sync(lambda: self.part.open("ab" if append else "wb"))
            pending = bytearray()
            try:
                async for piece in response.aiter_bytes():
                    pending += piece
                    if len(pending) >= CHUNK:
                        chunk, pending = bytes(pending), bytearray()
                        await anyio.to_thread.run_sync(_write, fh, self.digest, chunk)
                        self.done += len(chunk)
                        self._report()
            finally:
                # what arrived before a cut is kept (under 1 MiB: written in place, safe even while cancelled)
                if pending:
                    _write(fh, self.digest, bytes(pending))
                    self.done += len(pending)
                fh.close()
        self._report(force=True)
        if self.total is not None and self.done < self.total:
            raise RetryableError(f"connection closed at byte {self.done} of {self.total}")


async def download_verified(
    client: httpx.AsyncClient,
    url: str,
    part: Path,
    sha256: str | None = None,
    *,
    shown: str | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    progress: ProgressCallback | None = None,
    log: LogCallback | None = None,
) -> tuple[str, int]:
    """Download ``url`` into ``part``, continuing what ``part`` already holds; return ``(sha256, size)``.

    Cut connections, 408/429/5xx answers and resets are retried (resuming with ``Range``); a server that ignores
    ``Range`` starts the file over. With ``sha256`` the content is verified: on a mismatch ``part`` is removed
    and :class:`ChecksumError` raised. ``client`` should not retry itself (``http_client(retry=False)``).
    ``shown``: the URL as errors and logs may show it (no secrets); ``log`` receives resume notes.
    """
    import httpx

    from .http import is_transient

    shown = shown or url
    say: LogCallback = log or (lambda _message: None)
    job = _Transfer(url, part, shown, progress)
    await job.prime()
    if job.done:
        say(f"resuming at byte {job.done}")

    async def once(attempt: int) -> None:
        await job.attempt(client, say)

    def note(attempt: int, exc: BaseException, delay: float) -> None:
        say(f"{exc}; resuming at byte {job.done} (attempt {attempt + 1})")

    try:
        await retrying(once, policy=policy, retryable=is_transient, on_retry=note)
    except RetriesExhausted as exc:
        raise FetchError(f"cannot fetch {shown} after {exc.attempts} attempts: {exc.last}") from exc
    except httpx.HTTPError as exc:
        tried = f" after {policy.attempts} attempts" if is_transient(exc) else ""
        raise FetchError(f"cannot fetch {shown}{tried}: {type(exc).__name__}: {exc}") from exc
    actual = job.digest.hexdigest()
    if sha256 and actual != sha256:
        await anyio.Path(part).unlink(missing_ok=True)
        raise ChecksumError(shown, sha256, actual)
    return actual, job.done
