"""The distributors: AIB's ``VHD`` to ``s3://bucket/key``, and ``S3Image`` (several regions, a choice of format)."""

from __future__ import annotations

from typing import ClassVar

import anyio
from pydantic import BaseModel

from aib_provider_s3_vhd.locations import S3Location, check_template_endpoint, is_s3_uri, parse_s3_uri
from aib_provider_s3_vhd.publish import ObjectSpec, Publication, RegionTarget
from aib_provider_s3_vhd.settings import S3Settings
from aib_provider_s3_vhd.specs import S3Format, S3ImageDistributor
from aib_provider_s3_vhd.transport import ClientPool, Endpoint
from aib_sdk import disks
from aib_sdk.artifacts import Artifact, RunOutput
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import DistributeError
from aib_sdk.models.specs import VhdDistributor


def object_metadata(
    artifact: Artifact, fmt: str, digest: str, ctx: RunContext, extra: dict[str, str] | None
) -> dict[str, str]:
    """``x-amz-meta-*``: the image digest, its format and OS facts, and the AIB run that made it."""
    meta = dict(extra or {})
    meta.update(
        {
            "sha256": digest,
            "aib-format": fmt,
            "aib-os-type": artifact.os_type,
            "aib-hyper-v-generation": artifact.hyper_v_generation,
        }
    )
    optional = {
        "aib-template-digest": artifact.template_digest or ctx.template_digest,
        "aib-run-id": artifact.run_id or ctx.run_id,
        "aib-template-name": artifact.template_name or ctx.template_name,
        "aib-source-version": artifact.source_version or "",
    }
    meta.update({k: v for k, v in optional.items() if v and v.isascii()})
    return meta


async def publish_image(
    artifact: Artifact,
    ctx: RunContext,
    *,
    run_output_name: str,
    type_name: str,
    fmt: S3Format,
    regions: list[tuple[str | None, S3Location, str | None]],
    tags: dict[str, str] | None,
    storage_class: str | None = None,
    metadata: dict[str, str] | None = None,
) -> RunOutput:
    """Publish ``artifact`` as ``fmt`` (converted once per artifact) to every ``(region, location, endpointUrl)``
    concurrently; the image is hashed once per run, however many targets publish it."""
    settings = S3Settings.from_config(ctx.config)
    path = await disks.converted(artifact, fmt, ctx, target_name=run_output_name)
    size = (await anyio.Path(path).stat()).st_size
    digest = await disks.artifact_sha256(
        artifact, path, lambda done, total: ctx.progress("checksum", path.name, done, total, target=run_output_name)
    )
    async with ClientPool(settings) as pool:
        targets: list[RegionTarget] = []
        for region, location, endpoint_url in regions:
            endpoint = Endpoint(region, endpoint_url)
            label = region or str((await pool.client(endpoint)).meta.region_name or "us-east-1")
            if any(t.label == label for t in targets):
                label = f"{label}:{location.bucket}"
            targets.append(RegionTarget(label, location, endpoint))
        try:
            publication = Publication(
                ctx,
                run_output_name=run_output_name,
                type_name=type_name,
                path=path,
                size=size,
                digest=digest,
                targets=targets,
                spec=ObjectSpec(object_metadata(artifact, fmt, digest, ctx, metadata), tags or {}, storage_class),
                settings=settings,
                pool=pool,
            )
        except ValueError as exc:  # an empty image, or one beyond S3's size limits
            raise DistributeError(f"S3 target {run_output_name!r}: {exc}") from exc
        results = await publication.run()
    failed = [r for r in results.values() if r.outcome == "failed"]
    if failed:
        done = [r for r in results.values() if r.outcome != "failed"]
        text = "; ".join(f"region {r.target.label} ({r.target.location.uri}): {r.message}" for r in failed)
        if done:
            text += " (succeeded: " + ", ".join(r.target.label for r in done) + ")"
        raise DistributeError(f"S3 target {run_output_name!r} failed in {text}")
    for result in results.values():
        ctx.log(f"s3:{run_output_name}", f"{result.target.label}: {result.message}")
    first = targets[0].location.uri
    return RunOutput(
        run_output_name=run_output_name, artifact_uri=first, regions={t.label: t.location.uri for t in targets}
    )


class S3VhdPublisher:
    """AIB's ``VHD`` target when its ``uri`` is ``s3://bucket/key``: a fixed VHD (1 MiB aligned) in that bucket.

    The region and endpoint come from botocore's chain (``AWS_REGION``, ``AWS_ENDPOINT_URL_S3``, profiles).
    """

    type_name: ClassVar[str] = "VHD"
    spec_model: ClassVar[type[BaseModel]] = VhdDistributor

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        return isinstance(spec, VhdDistributor) and is_s3_uri(spec.uri)

    async def publish(self, artifact: Artifact, spec: BaseModel, ctx: RunContext) -> RunOutput:
        assert isinstance(spec, VhdDistributor) and spec.uri is not None
        try:
            location = parse_s3_uri(spec.uri)
        except ValueError as exc:
            raise DistributeError(f"distribute {spec.run_output_name!r}: {exc}") from exc
        return await publish_image(
            artifact,
            ctx,
            run_output_name=spec.run_output_name,
            type_name=self.type_name,
            fmt="vhd",
            regions=[(None, location, None)],
            tags=spec.artifact_tags,
        )


class S3ImagePublisher:
    """``S3Image``: the image in ``format`` under ``key`` in each region's bucket, all regions at once."""

    type_name: ClassVar[str] = "S3Image"
    spec_model: ClassVar[type[BaseModel]] = S3ImageDistributor

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """Claims every ``S3Image`` target; refuses (:class:`UsageError`) a region ``endpointUrl`` the operator did
        not configure, so no credentials go to a host the template chose."""
        if not isinstance(spec, S3ImageDistributor):
            return False
        for region in spec.regions:
            check_template_endpoint(region.endpoint_url, config, f"S3Image target {spec.run_output_name!r}")
        return True

    async def publish(self, artifact: Artifact, spec: BaseModel, ctx: RunContext) -> RunOutput:
        assert isinstance(spec, S3ImageDistributor)
        return await publish_image(
            artifact,
            ctx,
            run_output_name=spec.run_output_name,
            type_name=self.type_name,
            fmt=spec.format,
            regions=[(r.region, S3Location(r.bucket, spec.key), r.endpoint_url) for r in spec.regions],
            tags=spec.artifact_tags,
            storage_class=spec.storage_class,
            metadata=spec.metadata,
        )
