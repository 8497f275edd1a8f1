"""Download a page blob through a SAS URL into a sparse local file: only the written page ranges, concurrently."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from aib_provider_azure.blob import storage_error
from aib_provider_azure.groups import first_error
from aib_provider_azure.ranges import CHUNK, is_zero
from aib_provider_azure.retry import send_with_retry
from aib_provider_azure.settings import STORAGE_VERSION
from aib_sdk.errors import DistributeError
from aib_sdk.protocols import ProgressHandler

if TYPE_CHECKING:
    import httpx

_RANGE = re.compile(r"<PageRange><Start>(\d+)</Start><End>(\d+)</End></PageRange>")


@dataclass
class DownloadStats:
    size: int = 0
    bytes_read: int = 0
    requests: int = 0


def _with_query(url: str, extra: str) -> str:
    return f"{url}&{extra}" if "?" in url else f"{url}?{extra}"


async def _get(client: httpx.AsyncClient, url: str, headers: dict[str, str], what: str) -> httpx.Response:
    async def build() -> httpx.Request:
        return client.build_request("GET", url, headers={"x-ms-version": STORAGE_VERSION, **headers})

    response = await send_with_retry(client, build, what=what)
    if response.status_code not in (200, 206):
        raise storage_error(what, response)
    return response


def _write(path: Path, offset: int, data: bytes, block: int = 64 * 1024) -> None:
    """Write ``data`` at ``offset``, leaving all-zero 64 KiB blocks as holes (the file starts sparse)."""
    view = memoryview(data)
    fd = os.open(path, os.O_WRONLY)
    try:
        for start in range(0, len(view), block):
            piece = view[start : start + block]
            if not is_zero(piece):
                os.pwrite(fd, piece, offset + start)
    finally:
        os.close(fd)


async def download_page_blob(
    client: httpx.AsyncClient,
    sas_url: str,
    dest: Path,
    *,
    concurrency: int = 8,
    on_progress: ProgressHandler | None = None,
) -> DownloadStats:
    """Fetch the blob at ``sas_url`` into ``dest`` (created sparse at the blob's size); empty pages stay holes.

    The SAS is never logged: errors name the URL without its query.
    """
    plain = sas_url.split("?", 1)[0]
    head = await _get(client, sas_url, {"x-ms-range": "bytes=0-511"}, f"read {plain}")
    total = head.headers.get("content-range", "").rpartition("/")[2]
    if not total.isdigit():
        raise DistributeError(f"read {plain}: no blob size in the response")
    size = int(total)
    listing = await _get(client, _with_query(sas_url, "comp=pagelist"), {}, f"get page ranges {plain}")
    ranges = [(int(a), int(b) + 1) for a, b in _RANGE.findall(listing.text)]
    stats = DownloadStats(size=size, requests=2)
    pieces = [(pos, min(CHUNK, end - pos)) for start, end in ranges for pos in range(start, end, CHUNK)]
    total_bytes = sum(length for _, length in pieces)
    await anyio.Path(dest).parent.mkdir(parents=True, exist_ok=True)

    def create() -> None:
        with open(dest, "wb") as f:
            f.truncate(size)

    await anyio.to_thread.run_sync(create)
    pending = iter(pieces)

    async def worker() -> None:
        for offset, length in pending:
            response = await _get(
                client, sas_url, {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}, f"read {plain}"
            )
            if len(response.content) != length:
                raise DistributeError(f"read {plain}: short read at {offset}")
            await anyio.to_thread.run_sync(_write, dest, offset, response.content)
            stats.bytes_read += length
            stats.requests += 1
            if on_progress:
                on_progress(stats.bytes_read, total_bytes)

    try:
        with first_error():
            async with anyio.create_task_group() as tg:
                for _ in range(max(1, concurrency)):
                    tg.start_soon(worker)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.Path(dest).unlink(missing_ok=True)
        raise
    return stats
