"""Multipart layout (part sizes within S3's limits) and file access in worker threads (read+checksum, write)."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import anyio

MiB = 1024 * 1024
MIN_PART = 8 * MiB
"""Smallest part this provider uses (S3 allows 5 MiB; 8 MiB keeps the request count low)."""
MAX_PART = 5 * 1024 * MiB
MAX_PARTS = 10_000


@dataclass(frozen=True)
class Part:
    number: int
    offset: int
    size: int

    @property
    def byte_range(self) -> str:
        """The HTTP ``Range`` spelling: ``bytes=first-last`` (inclusive)."""
        return f"bytes={self.offset}-{self.offset + self.size - 1}"


def part_size_for(size: int, forced: int | None = None) -> int:
    """The part size for an object of ``size`` bytes: at least 8 MiB, whole MiB, never more than 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    if forced is not None:
        if forced < needed:
            raise ValueError(f"part size {forced} would need more than {MAX_PARTS} parts for {size} bytes")
        return forced
    chosen = max(MIN_PART, -(-needed // MiB) * MiB)
    if chosen > MAX_PART:
        raise ValueError(f"object of {size} bytes exceeds S3's limit of {MAX_PARTS} parts of 5 GiB")
    return chosen


def plan_parts(size: int, part_size: int) -> list[Part]:
    """Split ``size`` bytes into numbered parts (the last one may be shorter)."""
    if size <= 0:
        raise ValueError("cannot upload an empty object as a disk image")
    return [
        Part(number=i + 1, offset=offset, size=min(part_size, size - offset))
        for i, offset in enumerate(range(0, size, part_size))
    ]


def _read(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:  # pread may return short reads
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise OSError(f"file ended at {offset + len(data)} while reading {size} bytes at {offset}")
        data += more
    return data


def _read_with_checksum(fd: int, part: Part) -> tuple[bytes, str]:
    data = _read(fd, part.offset, part.size)
    return data, base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


async def read_part(fd: int, part: Part) -> tuple[bytes, str]:
    """Read one part in a worker thread; return its bytes and their base64 SHA-256 (``ChecksumSHA256``)."""
    return await anyio.to_thread.run_sync(_read_with_checksum, fd, part)


async def write_at(fd: int, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset`` in a worker thread."""

    def write() -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)

    await anyio.to_thread.run_sync(write)


async def open_fd(path: Path, flags: int, mode: int = 0o644) -> int:
    return await anyio.to_thread.run_sync(os.open, str(path), flags, mode)


async def close_fd(fd: int) -> None:
    await anyio.to_thread.run_sync(os.close, fd)
