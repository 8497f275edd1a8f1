"""Helpers shared by the Azure distributors: events, staging blob names, the fixed VHD and its staged upload."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from aib_provider_azure.release import blob_record
from aib_provider_azure.session import AzureSession
from aib_provider_azure.settings import AzureSettings, BlobRef
from aib_provider_azure.upload import discard, upload_page_blob
from aib_sdk import disks
from aib_sdk.artifacts import Artifact
from aib_sdk.context import RunContext
from aib_sdk.errors import UsageError
from aib_sdk.events import TargetStatus
from aib_sdk.protocols import ProgressHandler
from aib_sdk.routing import ArmId

TargetState = Literal["Running", "Succeeded", "Failed", "Canceled"]


def status(
    ctx: RunContext,
    run_output_name: str,
    type_name: str,
    state: TargetState,
    *,
    region: str | None = None,
    message: str = "",
    artifact_id: str | None = None,
    artifact_uri: str | None = None,
) -> None:
    """Emit a :class:`TargetStatus` for the target (``region`` None) or one of its regions."""
    ctx.emit(
        TargetStatus(
            run_output_name=run_output_name,
            type=type_name,
            region=region,
            state=state,
            message=message,
            artifact_id=artifact_id,
            artifact_uri=artifact_uri,
        )
    )


def upload_progress(ctx: RunContext, run_output_name: str, label: str) -> ProgressHandler:
    def report(done: int, total: int | None) -> None:
        ctx.progress("upload", label, done, total, target=run_output_name)

    return report


def region_progress(ctx: RunContext, run_output_name: str, label: str) -> Callable[[str, int, int | None], None]:
    def report(region: str, done: int, total: int | None) -> None:
        ctx.progress("replicate", label, done, total, target=run_output_name, region=region)

    return report


def safe_name(value: str) -> str:
    """``value`` reduced to characters that are safe in a blob name segment and in metadata."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", value).strip(".-") or "image"


def metadata(ctx: RunContext, run_output_name: str) -> dict[str, str]:
    return {
        "aibrunid": safe_name(ctx.run_id),
        "aibtemplate": safe_name(ctx.template_name),
        "aiboutput": safe_name(run_output_name),
    }


def tag_metadata(tags: Mapping[str, str] | None) -> dict[str, str]:
    """``artifactTags`` as blob metadata: names reduced to identifiers (Azure's rule for metadata names), values
    to printable ASCII (HTTP header values)."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        name = re.sub(r"[^A-Za-z0-9_]", "_", key)
        name = f"_{name}" if not name or name[0].isdigit() else name
        out[name] = re.sub(r"[^\x20-\x7e]", "?", value)
    return out


def staging_blob(settings: AzureSettings, ctx: RunContext, run_output_name: str, region: str | None = None) -> BlobRef:
    """The intermediate VHD of a ManagedImage/SharedImage target.

    It goes to the ``[azure.regions]`` account of ``region`` when there is one (Azure reads the VHD in the image's
    own region), else to ``[azure] staging_storage_account``.
    """
    account_name = settings.regions.get(region.lower()) if region else None
    account_name = account_name or settings.staging_storage_account
    if not account_name:
        raise UsageError("[azure] staging_storage_account is required to publish ManagedImage/SharedImage targets")
    account = settings.account(account_name)
    name = f"{safe_name(ctx.template_name)}-{safe_name(ctx.run_id)}/{safe_name(run_output_name)}.vhd"
    return BlobRef(account, settings.staging_container, name)


async def fixed_vhd(artifact: Artifact, ctx: RunContext, run_output_name: str) -> Path:
    """The artifact as a fixed VHD (1 MiB aligned + footer), converted once per artifact."""
    return await disks.converted(artifact, "vhd", ctx, target_name=run_output_name)


def storage_account_id(blob: BlobRef, near: ArmId) -> str:
    """The ARM id of ``blob``'s account: ``[azure.storage.<account>] resource_id``, else assumed to live in
    ``near``'s subscription and resource group."""
    return blob.account.resource_id or (
        f"/subscriptions/{near.subscription}/resourceGroups/{near.resource_group}/providers/"
        f"Microsoft.Storage/storageAccounts/{blob.account.name}"
    )


@asynccontextmanager
async def staged_vhd(
    session: AzureSession, artifact: Artifact, ctx: RunContext, run_output_name: str, region: str | None
) -> AsyncIterator[BlobRef]:
    """The artifact uploaded as a fixed VHD to its :func:`staging_blob` for the block, deleted afterwards.

    The staging blob (named after the run) is removed, shielded and bounded, however the block ends.
    """
    settings = session.settings
    blob = staging_blob(settings, ctx, run_output_name, region)
    vhd = await fixed_vhd(artifact, ctx, run_output_name)
    entry = await ctx.journal.acquire("azure.blob", blob_record(blob, staging=True), f"staging VHD {blob.url}")
    try:
        await upload_page_blob(
            session.blob,
            vhd,
            blob,
            metadata=metadata(ctx, run_output_name),
            concurrency=settings.upload_concurrency,
            on_progress=upload_progress(ctx, run_output_name, blob.url),
        )
        yield blob
    finally:
        if await discard(session.blob, blob):
            await ctx.journal.release(entry)
