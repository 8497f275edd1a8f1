"""AIB's ``VHD`` target to Azure Storage: a sparse-aware page blob upload, then Copy Blob to other regions."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from aib_provider_azure.distributors.common import (
    fixed_vhd,
    metadata,
    region_progress,
    safe_name,
    status,
    tag_metadata,
    upload_progress,
)
from aib_provider_azure.release import blob_record
from aib_provider_azure.replicate import replicate
from aib_provider_azure.session import AzureSession
from aib_provider_azure.settings import AzureSettings
from aib_provider_azure.upload import upload_page_blob
from aib_sdk.artifacts import Artifact, RunOutput
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import DistributeError, UsageError
from aib_sdk.models.specs import VhdDistributor


class AzureVhd:
    """Publishes a fixed VHD as a page blob at ``uri`` (a blob or container URI on Azure or a configured endpoint).

    Replicates to ``[azure] vhd_replication_regions`` through ``[azure.regions]``; ``artifactUri`` is the plain
    blob URI (no SAS).
    """

    type_name: ClassVar[str] = "VHD"
    spec_model: ClassVar[type[BaseModel]] = VhdDistributor

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        uri = getattr(spec, "uri", None)
        if not isinstance(uri, str):
            return False
        try:
            return AzureSettings.from_config(config).claims_uri(uri)
        except UsageError:  # a broken [azure] table: claim only what is clearly Azure, publish() reports it
            return AzureSettings().claims_uri(uri)

    async def publish(self, artifact: Artifact, spec: BaseModel, ctx: RunContext) -> RunOutput:
        assert isinstance(spec, VhdDistributor)
        name = spec.run_output_name
        settings = AzureSettings.from_config(ctx.config)
        default = f"{safe_name(ctx.template_name)}-{safe_name(ctx.run_id)}.vhd"
        blob = settings.parse_blob_uri(spec.uri, default) if spec.uri else None
        if blob is None:
            raise UsageError(f"{name}: {spec.uri!r} is not an Azure blob URI")
        vhd = await fixed_vhd(artifact, ctx, name)
        meta = {**tag_metadata(spec.artifact_tags), **metadata(ctx, name)}  # artifactTags ride on the blob
        async with AzureSession(settings, ctx.options.credential) as session:
            entry = await ctx.journal.acquire("azure.blob", blob_record(blob, staging=False), f"VHD {blob.url}")
            try:
                stats = await upload_page_blob(
                    session.blob,
                    vhd,
                    blob,
                    metadata=meta,
                    concurrency=settings.upload_concurrency,
                    on_progress=upload_progress(ctx, name, blob.url),
                )
            finally:  # complete (the output), or deleted by the upload's own cleanup
                await ctx.journal.release(entry)
            ctx.log(
                name,
                f"uploaded {stats.bytes_written} of {stats.size} bytes ({stats.written_ranges} of "
                f"{stats.total_ranges} ranges) to {blob.url} in {stats.seconds:.1f}s",
            )
            output = RunOutput(name, artifact_uri=blob.url)
            if settings.vhd_replication_regions:
                result = await replicate(
                    session.blob,
                    settings,
                    blob,
                    settings.vhd_replication_regions,
                    meta,
                    poll_interval=min(settings.poll_interval, 2.0),
                    on_state=lambda region, state, msg: status(ctx, name, "VHD", state, region=region, message=msg),
                    on_progress=region_progress(ctx, name, blob.url),
                )
                output.regions = result.uris
                if result.failures:
                    detail = "; ".join(f"{r}: {m}" for r, m in result.failures.items())
                    raise DistributeError(
                        f"VHD {name}: replication failed in region(s) {', '.join(result.failures)}: {detail}"
                    )
        return output
