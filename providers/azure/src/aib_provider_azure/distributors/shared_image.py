"""AIB's ``SharedImage`` target on Azure: a gallery image version replicated to its target regions."""

from __future__ import annotations

import re
from typing import Any

from aib_provider_azure.arm import GALLERY_API, ArmClient, ArmConflict, ArmError
from aib_provider_azure.distributors.common import staged_vhd, storage_account_id
from aib_provider_azure.release import create_resource
from aib_provider_azure.session import AzureSession
from aib_provider_azure.settings import AzureSettings, BlobRef
from aib_sdk.artifacts import Artifact, DiskImage, RunOutput
from aib_sdk.bases import DistributorBase
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import ConflictError, DistributeError, UsageError
from aib_sdk.events import TargetState
from aib_sdk.models.specs import LatestVersioning, SharedImageDistributor, SourceVersioning
from aib_sdk.routing import ArmId, is_azure_arm_id, parse_arm_id

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_STATES: dict[str, TargetState] = {"completed": "Succeeded", "failed": "Failed", "replicating": "Running"}


def next_version(existing: list[str], major: int = -1) -> str:
    """AIB's ``Latest`` scheme: one patch above the newest version (within ``major`` when it is ≥ 0)."""
    parsed = sorted(tuple(int(p) for p in v.split(".")) for v in existing if _VERSION.match(v))
    if major >= 0:
        parsed = [v for v in parsed if v[0] == major]
        if not parsed:
            return f"{major}.0.0"
    if not parsed:
        return "0.0.1"
    a, b, c = parsed[-1]
    return f"{a}.{b}.{c + 1}"


def target_regions(spec: SharedImageDistributor, location: str) -> list[dict[str, Any]]:
    """``publishingProfile.targetRegions`` from ``targetRegions`` or ``replicationRegions`` (default: the location)."""
    default_type = spec.storage_account_type or "Standard_LRS"
    regions: list[dict[str, Any]] = []
    if spec.target_regions:
        for r in spec.target_regions:
            regions.append(
                {
                    "name": r.name,
                    "regionalReplicaCount": r.replica_count,
                    "storageAccountType": r.storage_account_type or default_type,
                }
            )
    else:
        for name in spec.replication_regions or []:
            regions.append({"name": name, "regionalReplicaCount": 1, "storageAccountType": default_type})
    if not any(_norm(r["name"]) == _norm(location) for r in regions):
        regions.insert(0, {"name": location, "regionalReplicaCount": 1, "storageAccountType": default_type})
    return regions


def _norm(region: str) -> str:
    return region.replace(" ", "").lower()


def _prefix(arm_id: ArmId, upto: int) -> str:
    tail = "/".join(f"{k}/{v}" for k, v in arm_id.segments[:upto])
    return (
        f"/subscriptions/{arm_id.subscription}/resourceGroups/{arm_id.resource_group}/providers/"
        f"{arm_id.namespace}/{tail}"
    )


def version_body(spec: SharedImageDistributor, location: str, blob: BlobRef, storage_account_id: str) -> dict[str, Any]:
    publishing: dict[str, Any] = {
        "targetRegions": target_regions(spec, location),
        "excludeFromLatest": spec.exclude_from_latest,
    }
    if spec.replication_mode:
        publishing["replicationMode"] = spec.replication_mode
    body: dict[str, Any] = {
        "location": location,
        "properties": {
            "publishingProfile": publishing,
            "storageProfile": {"osDiskImage": {"source": {"uri": blob.url, "storageAccountId": storage_account_id}}},
        },
    }
    if spec.artifact_tags:
        body["tags"] = dict(spec.artifact_tags)
    return body


class ReplicationWatcher:
    """Reads ``replicationStatus.summary[]`` of a version and reports each region's progress and state changes."""

    def __init__(self, arm: ArmClient, version_id: str, ctx: RunContext, run_output_name: str) -> None:
        self.arm, self.version_id, self.ctx, self.name = arm, version_id, ctx, run_output_name
        self.states: dict[str, str] = {}
        self.details: dict[str, str] = {}

    async def poll(self) -> None:
        try:
            body = await self.arm.get(self.version_id, GALLERY_API, params={"$expand": "ReplicationStatus"})
        except DistributeError:
            return  # progress is best effort; the operation's own polling decides the outcome
        summary = ((body or {}).get("properties", {}).get("replicationStatus") or {}).get("summary") or []
        for entry in summary:
            region = str(entry.get("region", ""))
            state = str(entry.get("state", "Unknown"))
            self.details[region] = str(entry.get("details") or "")
            progress = entry.get("progress")
            if isinstance(progress, int):
                self.ctx.progress("replicate", self.version_id, progress, 100, target=self.name, region=region)
            if self.states.get(region) != state:
                self.states[region] = state
                self.ctx.target_status(
                    self.name,
                    "SharedImage",
                    _STATES.get(state.lower(), "Running"),
                    region=region,
                    message=self.details[region] or state,
                )

    def failed(self) -> list[str]:
        return [r for r, s in self.states.items() if s.lower() == "failed"]


class AzureSharedImage(DistributorBase[SharedImageDistributor]):
    """Publishes a gallery image version under ``galleryImageId`` and waits for replication to every region."""

    @classmethod
    def accepts(cls, spec: SharedImageDistributor, config: Config) -> bool:
        return is_azure_arm_id(spec.gallery_image_id)

    async def preflight(self, spec: SharedImageDistributor, image: DiskImage, ctx: RunContext) -> None:
        """Before any VM boots: gallery and definition exist (or ``create_missing``); an explicit version is free."""
        async with AzureSession(
            AzureSettings.from_config(ctx.config), ctx.options.credential, ctx.options.http_transport
        ) as session:
            arm_id, _, definition_id, _, definition = await _lookup(session.arm, spec, ctx)
            version = arm_id.get("versions")
            if definition is not None and version is not None:
                versions = await session.arm.list(definition_id + "/versions", GALLERY_API)
                if version in [str(v.get("name")) for v in versions]:
                    raise ConflictError(
                        f"SharedImage {spec.run_output_name}: version {version} already exists in {definition_id}"
                    )

    async def publish(self, artifact: Artifact, spec: SharedImageDistributor, ctx: RunContext) -> RunOutput:
        name = spec.run_output_name
        settings = AzureSettings.from_config(ctx.config)
        async with AzureSession(settings, ctx.options.credential, ctx.options.http_transport) as session:
            arm = session.arm
            arm_id, gallery_id, definition_id, gallery, definition = await _lookup(arm, spec, ctx)
            if definition is None:
                definition = await _create_missing(arm, spec, artifact, ctx, gallery_id, definition_id, gallery)
            existing = [str(v.get("name")) for v in await arm.list(definition_id + "/versions", GALLERY_API)]
            version = arm_id.get("versions") or self._version(spec, artifact, existing)
            if version in existing:
                raise ConflictError(f"SharedImage {name}: version {version} already exists in {definition_id}")
            version_id = f"{definition_id}/versions/{version}"
            location = str(definition.get("location") or "")
            watcher = ReplicationWatcher(arm, version_id, ctx, name)
            async with staged_vhd(session, artifact, ctx, name, location) as blob:
                body = version_body(spec, location, blob, storage_account_id(blob, arm_id))
                try:
                    await create_resource(
                        arm,
                        ctx,
                        version_id,
                        body,
                        GALLERY_API,
                        label=f"SharedImage {name}",
                        on_poll=watcher.poll,
                        before_cleanup=watcher.poll,  # each region's state, read before the version is deleted
                    )
                    await watcher.poll()
                except ArmConflict as exc:
                    raise ConflictError(
                        f"SharedImage {name}: version {version} already exists in {definition_id}"
                    ) from exc
                except ArmError as exc:
                    failed = watcher.failed()
                    if failed:
                        detail = "; ".join(f"{r}: {watcher.details.get(r) or 'failed'}" for r in failed)
                        raise DistributeError(
                            f"SharedImage {name}: replication of {version_id} failed in region(s) "
                            f"{', '.join(failed)} ({detail}); {exc.arm_message}"
                        ) from exc
                    raise
        regions = {r["name"]: version_id for r in target_regions(spec, location)}
        return RunOutput(name, artifact_id=version_id, regions=regions)

    @staticmethod
    def _version(spec: SharedImageDistributor, artifact: Artifact, existing: list[str]) -> str:
        versioning = spec.versioning
        if isinstance(versioning, SourceVersioning):
            source = artifact.source_version or ""
            if not _VERSION.match(source):
                raise UsageError(
                    f"{spec.run_output_name}: versioning scheme Source needs a source version like 1.2.3, "
                    f"got {source!r}"
                )
            return source
        major = versioning.major if isinstance(versioning, LatestVersioning) else -1
        return next_version(existing, major)


async def _lookup(
    arm: ArmClient, spec: SharedImageDistributor, ctx: RunContext
) -> tuple[ArmId, str, str, dict[str, Any] | None, dict[str, Any] | None]:
    """Parse ``galleryImageId`` and fetch its gallery and definition; raise when missing (unless create_missing)."""
    name = spec.run_output_name
    arm_id = parse_arm_id(spec.gallery_image_id)
    kinds = [k.lower() for k, _ in arm_id.segments] if arm_id else []
    if arm_id is None or kinds not in (["galleries", "images"], ["galleries", "images", "versions"]):
        raise UsageError(
            f"{name}: galleryImageId must be …/galleries/<g>/images/<definition>[/versions/<v>]: "
            f"{spec.gallery_image_id!r}"
        )
    gallery_id, definition_id = _prefix(arm_id, 1), _prefix(arm_id, 2)
    gallery = await arm.get(gallery_id, GALLERY_API)
    definition = await arm.get(definition_id, GALLERY_API) if gallery is not None else None
    if definition is None and not AzureSettings.from_config(ctx.config).create_missing:
        if gallery is None:
            raise DistributeError(
                f"SharedImage {name}: gallery {gallery_id} does not exist; create it first "
                f"(az sig create -g {arm_id.resource_group} -r {arm_id.get('galleries')}) "
                f"or build with create_missing"
            )
        raise DistributeError(
            f"SharedImage {name}: image definition {definition_id} does not exist; create it first "
            f"(az sig image-definition create -g {arm_id.resource_group} -r {arm_id.get('galleries')} "
            f"-i {arm_id.get('images')} …) or build with create_missing"
        )
    return arm_id, gallery_id, definition_id, gallery, definition


async def _create_missing(
    arm: ArmClient,
    spec: SharedImageDistributor,
    artifact: Artifact,
    ctx: RunContext,
    gallery_id: str,
    definition_id: str,
    gallery: Any,
) -> Any:
    """``create_missing``: create the gallery and/or definition in the first target region (or ``[azure] location``)."""
    regions = [r.name for r in spec.target_regions or []] or list(spec.replication_regions or [])
    location = (gallery or {}).get("location") or (regions[0] if regions else ctx.config.get("azure", "location"))
    if not location:
        raise UsageError(f"{spec.run_output_name}: create_missing needs a target region or [azure] location")
    if gallery is None:
        ctx.log(spec.run_output_name, f"creating gallery {gallery_id} in {location}")
        await arm.put(gallery_id, {"location": location, "properties": {}}, GALLERY_API)
    ctx.log(spec.run_output_name, f"creating image definition {definition_id} in {location}")
    body = {
        "location": location,
        "properties": {
            "osType": artifact.os_type,
            "osState": "Generalized",
            "hyperVGeneration": artifact.hyper_v_generation,
            "identifier": {
                "publisher": "aib-sdk",
                "offer": gallery_id.rsplit("/", 1)[-1],
                "sku": definition_id.rsplit("/", 1)[-1],
            },
        },
    }
    return await arm.put(definition_id, body, GALLERY_API)
