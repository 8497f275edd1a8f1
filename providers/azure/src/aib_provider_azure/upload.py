"""Sparse-aware page blob upload of a fixed VHD: parallel 4 MiB Put Page calls, all-zero ranges skipped.

The blob is created with ``aibcomplete=false`` and marked ``aibcomplete=true`` (with the image's sha256) only after the
last page is written. A failed or cancelled upload deletes the blob it created (shielded, bounded), also when it is
cancelled while the Put Blob is in flight: the blob is created with a token of this upload (``aibcreator``) and an
unanswered create deletes the blob only if it carries that token.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from aib_provider_azure.blob import BlobService
from aib_provider_azure.ranges import CHUNK, PAGE, chunks, data_extents, is_zero
from aib_provider_azure.settings import BlobRef
from aib_sdk import disks
from aib_sdk.errors import DistributeError
from aib_sdk.protocols import ProgressHandler
from aib_sdk.runtime import bounded_map, cleanup_scope, raise_first

COMPLETE = "aibcomplete"
SHA256 = "aibsha256"
CREATOR = "aibcreator"


@dataclass
class UploadStats:
    """What an upload did: ranges considered, written and skipped, bytes sent, wall time."""

    size: int = 0
    total_ranges: int = 0
    written_ranges: int = 0
    skipped_ranges: int = 0
    bytes_written: int = 0
    seconds: float = 0.0


def _read_chunk(fd: int, offset: int, length: int, skip_zero: bool) -> tuple[bytes, str] | None:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise DistributeError(f"short read at offset {offset}: the file changed during the upload")
    if skip_zero and is_zero(data):
        return None
    return data, base64.b64encode(hashlib.md5(data).digest()).decode()


async def discard(service: BlobService, blob: BlobRef) -> bool:
    """Delete ``blob`` shielded from cancellation and bounded in time; failures to delete are swallowed (False)."""
    with cleanup_scope(60), contextlib.suppress(Exception):
        await service.delete(blob)
        return True
    return False


async def discard_if_created(service: BlobService, blob: BlobRef, token: str) -> None:
    """After a Put Blob whose answer never came: delete ``blob`` if this upload created it (it has ``token``)."""
    with cleanup_scope(60), contextlib.suppress(Exception):
        headers = await service.properties(blob)
        if headers is not None and headers.get(f"x-ms-meta-{CREATOR}") == token:
            await service.delete(blob, if_match=headers.get("etag"))


async def upload_page_blob(
    service: BlobService,
    path: Path,
    blob: BlobRef,
    *,
    metadata: Mapping[str, str] | None = None,
    sha256: str | None = None,
    concurrency: int = 8,
    skip_zero: bool = True,
    on_progress: ProgressHandler | None = None,
) -> UploadStats:
    """Upload ``path`` (a multiple of 512 bytes, e.g. a fixed VHD) as the page blob ``blob``; return statistics.

    ``sha256`` is recorded as ``aibsha256``; when None it is computed while the pages upload.
    """
    started = time.monotonic()
    size = (await anyio.Path(path).stat()).st_size
    if size == 0 or size % PAGE:
        raise DistributeError(f"{path.name}: size {size} is not a positive multiple of {PAGE} bytes")
    stats = UploadStats(size=size)
    meta = dict(metadata or {})
    await service.ensure_container(blob.account, blob.container)
    token = secrets.token_hex(16)
    try:
        await service.create_page_blob(blob, size, {**meta, COMPLETE: "false", CREATOR: token})
    except BaseException:
        await discard_if_created(service, blob, token)
        raise
    fd = await anyio.to_thread.run_sync(os.open, str(path), os.O_RDONLY)
    digest: list[str] = [sha256] if sha256 else []
    try:
        extents = await anyio.to_thread.run_sync(data_extents, fd, size) if skip_zero else [(0, size)]
        work = list(chunks(extents, size))
        stats.total_ranges = -(-size // CHUNK)
        stats.skipped_ranges = stats.total_ranges - len(work)
        done = 0

        async def put(piece: tuple[int, int]) -> None:
            nonlocal done
            offset, length = piece
            chunk = await anyio.to_thread.run_sync(_read_chunk, fd, offset, length, skip_zero)
            if chunk is None:
                stats.skipped_ranges += 1
            else:
                await service.put_page(blob, offset, chunk[0], md5=chunk[1])
                stats.written_ranges += 1
                stats.bytes_written += length
            done += length
            if on_progress:
                on_progress(done, size)

        async def hash_file() -> None:
            digest.append(await disks.sha256_file(path))

        with raise_first():
            async with anyio.create_task_group() as tg:
                if not digest:
                    tg.start_soon(hash_file)
                await bounded_map(put, work, concurrency)
        if on_progress:
            on_progress(size, size)
        await service.set_metadata(blob, {**meta, SHA256: digest[0], COMPLETE: "true"})
    except BaseException:
        await discard(service, blob)
        raise
    finally:
        os.close(fd)
    stats.seconds = time.monotonic() - started
    return stats
