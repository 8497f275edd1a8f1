"""Replicate a finished blob to storage accounts in other regions by server-side Copy Blob, all regions at once."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio

from aib_provider_azure.blob import BlobService
from aib_provider_azure.settings import AzureSettings, BlobRef
from aib_provider_azure.upload import COMPLETE, CREATOR, discard, discard_if_created
from aib_sdk.errors import DistributeError

RegionState = Callable[[str, Literal["Running", "Succeeded", "Failed"], str], None]
"""Receives ``(region, state, message)`` with state Running, Succeeded or Failed."""
RegionProgress = Callable[[str, int, int | None], None]
"""Receives ``(region, bytes_copied, bytes_total)``."""


@dataclass
class Replication:
    """Per region: the replica's URI, or why it failed."""

    uris: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def source_url(source: BlobRef) -> str:
    """The URL a Copy Blob reads from: with a short read-only SAS when the source account has a key."""
    from aib_provider_azure.sharedkey import blob_sas

    if source.account.key is None:
        return source.url
    sas = blob_sas(source.account.name, source.account.key, source.container, source.name)
    return f"{source.url}?{sas}"


async def copy_to_region(
    service: BlobService,
    source: BlobRef,
    dest: BlobRef,
    metadata: Mapping[str, str],
    *,
    region: str,
    poll_interval: float = 1.0,
    on_progress: RegionProgress | None = None,
) -> None:
    """Copy ``source`` to ``dest``, wait for the copy, then mark ``dest`` complete; delete it on any failure."""
    await service.ensure_container(dest.account, dest.container)
    token = secrets.token_hex(16)
    try:
        headers = await service.start_copy(dest, source_url(source), {**metadata, COMPLETE: "false", CREATOR: token})
    except BaseException:
        await discard_if_created(service, dest, token)
        raise
    try:
        while True:
            status = headers.get("x-ms-copy-status", "")
            copied, _, total = headers.get("x-ms-copy-progress", "").partition("/")
            if on_progress and copied.isdigit():
                on_progress(region, int(copied), int(total) if total.isdigit() else None)
            if status != "pending":
                break
            await anyio.sleep(poll_interval)
            found = await service.properties(dest)
            if found is None:
                raise DistributeError(f"region {region}: the copy {dest.url} disappeared")
            headers = found
        if status != "success":
            reason = headers.get("x-ms-copy-status-description", "")
            raise DistributeError(f"region {region}: copy to {dest.url} ended {status or 'unknown'} {reason}".strip())
        await service.set_metadata(dest, {**metadata, COMPLETE: "true"})
    except BaseException:
        await discard(service, dest)
        raise


async def replicate(
    service: BlobService,
    settings: AzureSettings,
    source: BlobRef,
    regions: Sequence[str],
    metadata: Mapping[str, str],
    *,
    poll_interval: float = 1.0,
    on_state: RegionState | None = None,
    on_progress: RegionProgress | None = None,
) -> Replication:
    """Copy ``source`` to each region's storage account (same container and name) concurrently.

    A region's failure does not stop the others; it is recorded in :attr:`Replication.failures`.
    """
    result = Replication()

    async def one(region: str) -> None:
        if on_state:
            on_state(region, "Running", "")
        try:
            dest = source.with_account(settings.region_account(region))
            if dest.url == source.url:
                result.uris[region] = source.url
            else:
                await copy_to_region(
                    service,
                    source,
                    dest,
                    metadata,
                    region=region,
                    poll_interval=poll_interval,
                    on_progress=on_progress,
                )
                result.uris[region] = dest.url
        except Exception as exc:
            result.failures[region] = str(exc)
            if on_state:
                on_state(region, "Failed", str(exc))
            return
        if on_state:
            on_state(region, "Succeeded", result.uris[region])

    async with anyio.create_task_group() as tg:
        for region in dict.fromkeys(regions):
            tg.start_soon(one, region)
    return result
