"""Copy one image file to several region directories at once, hashing it once while the copies are written.

One reader walks the source's data extents (``SEEK_DATA``/``SEEK_HOLE``), hashes every byte (holes as zeros) and
hands each chunk to one writer thread per region through a small bounded queue; writers skip all-zero chunks and
``ftruncate`` to the full size, so copies stay sparse. Where the file system can share extents (``FICLONE``: XFS
with reflink, btrfs) a region's copy is a reflink instead, falling back silently to copying on
``EOPNOTSUPP``/``EXDEV``. A copy is renamed from its ``.pending-…`` name only after the digest of the bytes it
received is known and matches the expected one.

The byte pipeline runs entirely in worker threads (no event-loop round trip per chunk, which under CPU load costs
more than the copy); the event loop only samples progress and reacts to cancellation, which stops the threads
between chunks. At most ``max_parallel`` regions are written at once; more regions go in further waves, each
re-reading and re-verifying the source.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import anyio
from anyio.to_thread import run_sync

from aib_sdk.errors import DistributeError

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_NO_REFLINK = frozenset({errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS, errno.EPERM})
_HOLE_STEP = 32 << 20
_QUEUE_DEPTH = 4
_POLL = 0.1
T = TypeVar("T")


@functools.cache
def _zeros() -> memoryview:
    """A zero buffer for hashing holes (calloc'ed: reading it costs no memory)."""
    return memoryview(bytes(_HOLE_STEP))


Method = Literal["copy", "reflink", "reference"]
"""``reference``: no copy (a Shallow replica recorded as pointing at the primary copy)."""
Chunk = tuple[int, int, bytes | None]  # offset, length, data (None: zeros, nothing to write)


class RegionError(DistributeError):
    """Copying to one region failed."""

    def __init__(self, region: str, message: str) -> None:
        self.region = region
        super().__init__(f"region {region}: {message}")


class _Stopped(Exception):
    """The pipeline was stopped from outside (cancellation)."""


@dataclass
class CopyTarget:
    """One region's copy: written to ``pending``, renamed to ``final`` once verified."""

    region: str
    pending: Path
    final: Path
    method: Method = "copy"
    fd: int | None = field(default=None, repr=False)
    done: int = 0


@dataclass(frozen=True)
class CopyOutcome:
    region: str
    path: Path
    sha256: str
    size: int
    method: Method


ProgressFn = Callable[[str, int, int], None]
"""``(region, bytes_done, bytes_total)``; called on the event loop."""
DoneFn = Callable[[CopyOutcome], None]


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a task group that is not a cancellation (the group itself if there is none)."""
    cancelled = anyio.get_cancelled_exc_class()
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_error(exc)
            if inner is not exc:
                return inner
        elif not isinstance(exc, cancelled):
            return exc
    return group


def extents(fd: int, size: int) -> list[tuple[int, int, bool]]:
    """``(offset, length, is_data)`` runs covering the file; everything is data where holes cannot be probed."""
    out: list[tuple[int, int, bool]] = []
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                data = size
            else:
                return [(0, size, True)]
        data = min(data, size)
        if data > pos:
            out.append((pos, data - pos, False))
        if data >= size:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        out.append((data, hole - data, True))
        pos = hole
    return out


def try_reflink(src_fd: int, dst_fd: int) -> bool:
    """Clone ``src_fd`` into ``dst_fd`` with ``FICLONE``; False where the file system cannot."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise
    return True


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _put(q: queue.Queue[Chunk | None], item: Chunk | None, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


class Replicator:
    """Copies ``source`` to every target concurrently and verifies the digest of what was copied."""

    def __init__(
        self,
        source: Path,
        targets: list[CopyTarget],
        *,
        limiter: anyio.CapacityLimiter | None = None,
        max_parallel: int = 4,
        expected_sha256: str | None = None,
        chunk_size: int = 512 << 10,
        fsync: bool = True,
        reflink: bool = True,
        progress_interval: float = 0.25,
        on_progress: ProgressFn | None = None,
        on_done: DoneFn | None = None,
    ) -> None:
        self.source = source
        self.targets = targets
        self.limiter = limiter
        self.max_parallel = max(1, max_parallel)
        self.expected = expected_sha256.lower() if expected_sha256 else None
        self.chunk_size = chunk_size
        self.fsync = fsync
        self.reflink = reflink
        self.progress_interval = progress_interval
        self.on_progress = on_progress or (lambda region, done, total: None)
        self.on_done = on_done or (lambda outcome: None)
        self.size = 0
        self.sha256 = ""
        self._reported: dict[str, int] = {}

    async def run(self) -> list[CopyOutcome]:
        """Write and verify every copy; on any error or cancellation, stop the threads, close files, re-raise.

        Removing the partial files is the caller's job (it owns the directories).
        """
        src_fd = await run_sync(os.open, self.source, os.O_RDONLY)
        try:
            return await self._run(src_fd)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            with anyio.CancelScope(shield=True):
                await run_sync(self._close_all, src_fd)

    async def _run(self, src_fd: int) -> list[CopyOutcome]:
        self.size = os.fstat(src_fd).st_size
        await self._threaded(self._prepare, src_fd)
        copies = [t for t in self.targets if t.method == "copy"]
        waves = [copies[i : i + self.max_parallel] for i in range(0, len(copies), self.max_parallel)] or [[]]
        outcomes: list[CopyOutcome] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._monitor)
            for number, wave in enumerate(waves):
                clones = [t for t in self.targets if t.method == "reflink"] if number == 0 else []
                digest = await self._threaded(self._pipeline, src_fd, wave, clones)
                expected = self.expected or self.sha256 or digest
                if digest != expected:
                    raise DistributeError(
                        f"sha256 of {self.source} is {digest}, expected {expected}: the artifact changed on disk"
                    )
                self.sha256 = digest
                for outcome in await self._threaded(self._finish, [*clones, *wave]):
                    self._report(outcome.region, self.size)
                    outcomes.append(outcome)
                    self.on_done(outcome)
            tg.cancel_scope.cancel()
        order = [t.region for t in self.targets]
        return sorted(outcomes, key=lambda o: order.index(o.region))

    async def _threaded(self, func: Callable[..., T], *args: object) -> T:
        """Run ``func(*args, stop)`` in a worker thread; on cancellation set ``stop`` and wait for it to return."""
        stop, started, finished = threading.Event(), threading.Event(), threading.Event()

        def work() -> T:
            started.set()
            try:
                if stop.is_set():
                    raise _Stopped
                return func(*args, stop)
            finally:
                finished.set()

        try:
            return await run_sync(work, abandon_on_cancel=True, limiter=self.limiter)
        except BaseException:
            stop.set()
            if started.is_set():
                with anyio.CancelScope(shield=True):
                    await run_sync(finished.wait)
            raise

    async def _monitor(self) -> None:
        while True:
            await anyio.sleep(self.progress_interval)
            for target in self.targets:
                self._report(target.region, target.done)

    def _report(self, region: str, done: int) -> None:
        if self._reported.get(region) != done:
            self._reported[region] = done
            self.on_progress(region, done, self.size)

    def _close_all(self, src_fd: int) -> None:
        os.close(src_fd)
        for target in self.targets:
            if target.fd is not None:
                os.close(target.fd)
                target.fd = None

    # In worker threads ------------------------------------------------------------------------------------------

    def _prepare(self, src_fd: int, stop: threading.Event) -> None:
        """Create every pending file; clone where the file system can."""
        for target in self.targets:
            try:
                target.pending.parent.mkdir(parents=True, exist_ok=True)
                target.fd = os.open(target.pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                if self.reflink and self.size and try_reflink(src_fd, target.fd):
                    target.method = "reflink"
            except OSError as exc:
                raise RegionError(target.region, f"creating {target.pending}: {exc.strerror or exc}") from exc

    def _pipeline(self, src_fd: int, wave: list[CopyTarget], clones: list[CopyTarget], stop: threading.Event) -> str:
        """Read and hash the source once, feeding one writer thread per target of ``wave``; return the digest."""
        hasher = hashlib.sha256()
        chunk = self.chunk_size
        zero_chunk = bytes(chunk)
        errors: list[BaseException] = []
        queues: list[queue.Queue[Chunk | None]] = [queue.Queue(_QUEUE_DEPTH) for _ in wave]

        def write(target: CopyTarget, q: queue.Queue[Chunk | None]) -> None:
            fd = target.fd
            assert fd is not None
            try:
                while True:
                    try:
                        item = q.get(timeout=_POLL)
                    except queue.Empty:
                        if stop.is_set():
                            return
                        continue
                    if item is None or stop.is_set():
                        return
                    offset, length, data = item
                    if data is not None:
                        _pwrite_all(fd, data, offset)
                    target.done += length
            except OSError as exc:
                errors.append(RegionError(target.region, f"writing {target.pending}: {exc.strerror or exc}"))
                stop.set()
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        done = 0
        with ThreadPoolExecutor(max_workers=max(1, len(wave)), thread_name_prefix="aib-replicate") as pool:
            for target, q in zip(wave, queues, strict=True):
                target.done = 0
                pool.submit(write, target, q)
            try:
                for offset, length, is_data in extents(src_fd, self.size):
                    end = offset + length
                    while offset < end and not stop.is_set():
                        step = min(chunk if is_data else _HOLE_STEP, end - offset)
                        item: Chunk
                        if is_data:
                            data = os.pread(src_fd, step, offset)
                            if len(data) != step:
                                raise DistributeError(f"{self.source} changed while it was being replicated")
                            hasher.update(data)
                            zeros = zero_chunk if step == chunk else _zeros()[:step]
                            item = (offset, step, None if data == zeros else data)
                        else:
                            hasher.update(_zeros()[:step])
                            item = (offset, step, None)
                        for q in queues:
                            _put(q, item, stop)
                        offset += step
                        done += step
                        for target in clones:
                            target.done = done
            finally:
                for q in queues:
                    _put(q, None, stop)
        if errors:
            raise errors[0]
        if stop.is_set():
            raise _Stopped
        return hasher.hexdigest()

    def _finish(self, targets: list[CopyTarget], stop: threading.Event) -> list[CopyOutcome]:
        """Size, flush and rename verified copies (flushes run in parallel)."""

        def finish(target: CopyTarget) -> CopyOutcome:
            fd = target.fd
            assert fd is not None
            try:
                os.ftruncate(fd, self.size)
                if self.fsync:
                    os.fsync(fd)
                target.pending.rename(target.final)
            except OSError as exc:
                raise RegionError(target.region, f"finishing {target.pending}: {exc.strerror or exc}") from exc
            target.done = self.size
            return CopyOutcome(target.region, target.final, self.sha256, self.size, target.method)

        if not targets:
            return []
        with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="aib-replicate") as pool:
            return list(pool.map(finish, targets))
