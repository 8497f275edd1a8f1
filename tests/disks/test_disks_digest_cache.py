"""``disks.cached_sha256``: a source disk is hashed once per version of the file, on real files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from aib_sdk import disks

pytestmark = pytest.mark.anyio


async def test_unchanged_file_is_not_read_again(tmp_path: Path, sha256_reads: list[Path]) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(3 * disks.CHUNK + 5))
    expected = hashlib.sha256(disk.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    progress: list[tuple[int, int | None]] = []
    assert await disks.cached_sha256(disk, cache) == expected
    assert await disks.cached_sha256(disk, cache, lambda d, t: progress.append((d, t))) == expected
    assert sha256_reads == [disk]
    assert progress == [(disk.stat().st_size, disk.stat().st_size)]  # progress still reports the whole file


async def test_any_change_means_a_new_digest(tmp_path: Path, sha256_reads: list[Path]) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"a" * 4096)
    cache = tmp_path / "cache"
    first = await disks.cached_sha256(disk, cache)
    stat = disk.stat()
    # Same size, and the mtime put back: the ctime still tells.
    disk.write_bytes(b"b" * 4096)
    os.utime(disk, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = await disks.cached_sha256(disk, cache)
    assert second == hashlib.sha256(b"b" * 4096).hexdigest() != first
    # A new file at the same path (a new inode) is hashed too.
    disk.unlink()
    disk.write_bytes(b"c" * 10)
    assert await disks.cached_sha256(disk, cache) == hashlib.sha256(b"c" * 10).hexdigest()
    assert len(sha256_reads) == 3


async def test_a_broken_record_is_ignored(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"data")
    cache = tmp_path / "cache"
    await disks.cached_sha256(disk, cache)
    for record in (cache / "digests").iterdir():
        record.write_text("{not json")
    assert await disks.cached_sha256(disk, cache) == hashlib.sha256(b"data").hexdigest()
