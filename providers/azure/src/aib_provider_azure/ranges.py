"""Which parts of a disk file hold data: sparse extents (SEEK_DATA/SEEK_HOLE) cut into aligned page chunks."""

from __future__ import annotations

import os
from collections.abc import Iterator

PAGE = 512
CHUNK = 4 * 1024 * 1024  # Put Page accepts at most 4 MiB per call


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` byte extents that may hold data; the whole file when the filesystem cannot tell."""
    extents: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past pos
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end))
            pos = end
    except (AttributeError, OSError):
        return [(0, size)]
    return extents


def chunks(extents: list[tuple[int, int]], size: int, chunk: int = CHUNK) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` chunks on a ``chunk`` grid covering every extent, in order, none repeated."""
    last_end = -1
    for start, end in extents:
        first = max((start // chunk) * chunk, last_end)
        pos = first
        while pos < end:
            yield pos, min(chunk, size - pos)
            pos += chunk
        last_end = max(last_end, pos)


def is_zero(data: bytes | memoryview, _zero: bytes = bytes(CHUNK)) -> bool:
    """Whether ``data`` (at most one chunk) is all zero bytes (a memcmp against a shared zero buffer)."""
    return data == _zero[: len(data)] if len(data) <= len(_zero) else data == bytes(len(data))
