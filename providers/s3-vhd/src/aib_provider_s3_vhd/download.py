"""Ranged concurrent download of one object into a preallocated file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from aib_provider_s3_vhd.locations import S3Location
from aib_provider_s3_vhd.parts import MiB, Part, close_fd, open_fd, plan_parts, write_at
from aib_provider_s3_vhd.settings import S3Settings
from aib_provider_s3_vhd.transport import with_retries
from aib_sdk.runtime import bounded_map, cleanup_scope

DOWNLOAD_PART = 16 * MiB
READ_CHUNK = 1 * MiB


async def download_object(
    client: Any,
    source: S3Location,
    etag: str,
    size: int,
    dest: Path,
    settings: S3Settings,
    *,
    on_bytes: Callable[[int], None],
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> None:
    """Write ``size`` bytes of ``source`` (pinned to ``etag``) to ``dest``, ranges in parallel.

    The file is created and sized first; each range is fetched with ``If-Match`` so that a concurrent overwrite
    fails the download instead of mixing two versions. A range that fails mid-stream is fetched again.
    """
    fd = await open_fd(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        await anyio.to_thread.run_sync(os.ftruncate, fd, size)
        parts = plan_parts(size, settings.part_size or DOWNLOAD_PART)

        async def fetch(part: Part) -> None:
            written = 0

            async def attempt() -> None:
                nonlocal written
                if written:  # a previous attempt got this far: undo its progress report
                    on_bytes(-written)
                    written = 0
                response = await client.get_object(
                    Bucket=source.bucket, Key=source.key, Range=part.byte_range, IfMatch=etag
                )
                body = response["Body"]
                try:
                    offset = part.offset
                    while offset < part.offset + part.size:
                        chunk = await body.read(min(READ_CHUNK, part.offset + part.size - offset))
                        if not chunk:
                            raise ConnectionError(f"{source.uri}: body ended early in {part.byte_range}")
                        await write_at(fd, offset, chunk)
                        offset += len(chunk)
                        written += len(chunk)
                        on_bytes(len(chunk))
                finally:
                    body.close()

            await with_retries(attempt, settings, on_retry=on_retry)

        await bounded_map(fetch, parts, settings.max_concurrency)
        await anyio.to_thread.run_sync(os.fsync, fd)
    finally:
        with cleanup_scope(10):
            await close_fd(fd)
