"""What an Azure publish journals before creating it, and how ``aib gc`` releases it after a crash.

Kinds: ``azure.blob`` (a staging VHD, or an output VHD while it uploads: deleted unless it is a complete output)
and ``azure.resource`` (a managed image or gallery version this run PUT with ``If-None-Match: *``: deleted only
when the service had accepted *this run's* PUT, so another run's resource is never touched).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aib_provider_azure.arm import ArmClient, ArmConflict
from aib_provider_azure.session import AzureSession
from aib_provider_azure.settings import AzureSettings, BlobRef
from aib_provider_azure.upload import COMPLETE
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.options import BuildOptions
from aib_sdk.runtime import cleanup_scope

DELETE_SECONDS = 300.0


def blob_record(blob: BlobRef, *, staging: bool) -> dict[str, Any]:
    return {"account": blob.account.name, "container": blob.container, "name": blob.name, "staging": staging}


async def create_resource(
    arm: ArmClient,
    ctx: RunContext,
    resource_id: str,
    body: dict[str, Any],
    api_version: str,
    *,
    label: str,
    on_poll: Callable[[], Awaitable[None]] | None = None,
    before_cleanup: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """PUT ``resource_id`` only if it does not exist (``If-None-Match: *``), journaled; on failure or cancellation
    delete it — only if this run's PUT was accepted (shielded, bounded) — and re-raise."""
    entry = await ctx.journal.acquire(
        "azure.resource", {"id": resource_id, "apiVersion": api_version, "accepted": False}, label
    )
    accepted = False

    async def mark() -> None:
        nonlocal accepted
        accepted = True
        await ctx.journal.update(entry, {"accepted": True})

    try:
        result = await arm.put(resource_id, body, api_version, on_poll=on_poll, create_only=True, on_accepted=mark)
    except BaseException as exc:
        if not accepted or isinstance(exc, ArmConflict):
            await ctx.journal.release(entry)  # nothing of ours exists
            raise
        deleted = False
        with cleanup_scope(DELETE_SECONDS):
            if before_cleanup is not None:
                await before_cleanup()
            try:
                await arm.delete(resource_id, api_version)
                deleted = True
            except Exception as err:
                ctx.warn(f"{label}: could not delete the failed {resource_id}: {err}")
        if deleted:
            await ctx.journal.release(entry)
        raise
    await ctx.journal.release(entry)  # complete: the run's output
    return result


async def release_blob(data: dict[str, Any], config: Config, options: BuildOptions) -> str:
    """Releaser of ``azure.blob``: delete a staging blob, or an output blob that never completed."""
    settings = AzureSettings.from_config(config)
    blob = BlobRef(settings.account(str(data["account"])), str(data["container"]), str(data["name"]))
    async with AzureSession(settings, options.credential) as session:
        props = await session.blob.properties(blob)
        if props is None:
            return f"blob {blob.url} was already gone"
        if not data.get("staging") and props.get(f"x-ms-meta-{COMPLETE}") == "true":
            return f"blob {blob.url} is complete (an output): left in place"
        await session.blob.delete(blob)
    return f"deleted {'staging' if data.get('staging') else 'partial'} blob {blob.url}"


async def release_resource(data: dict[str, Any], config: Config, options: BuildOptions) -> str:
    """Releaser of ``azure.resource``: delete the image or version only if this run's PUT created it."""
    resource_id = str(data["id"])
    if not data.get("accepted"):
        return f"{resource_id}: not created by this run, left alone"
    settings = AzureSettings.from_config(config)
    async with AzureSession(settings, options.credential) as session:
        await session.arm.delete(resource_id, str(data["apiVersion"]))
    return f"deleted {resource_id}"
