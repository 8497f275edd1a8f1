"""The ``SharedImage`` and ``ManagedImage`` distributors for local ids (subscription ``local``)."""

from __future__ import annotations

import shlex
from pathlib import Path

from anyio.to_thread import run_sync

from aib_provider_local_gallery.ids import (
    GalleryImageRef,
    GalleryRef,
    check_name,
    parse_gallery_image_id,
    parse_managed_image_id,
)
from aib_provider_local_gallery.manifest import ArtifactInfo, DefinitionRecord, ImageManifest
from aib_provider_local_gallery.publish import RegionSpec, publish_image
from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.store import GalleryStore, NotFoundError
from aib_provider_local_gallery.versioning import from_source, next_latest
from aib_sdk.artifacts import Artifact, DiskImage, RunOutput
from aib_sdk.bases import DistributorBase
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.errors import ConflictError, DistributeError, UsageError
from aib_sdk.models.specs import LatestVersioning, ManagedImageDistributor, SharedImageDistributor, SourceVersioning
from aib_sdk.routing import is_local_arm_id

_LATEST_RETRIES = 5


def create_commands(
    ref: GalleryImageRef, os_type: str, generation: str, *, gallery_missing: bool, location: str | None
) -> list[str]:
    """The ``aib gallery`` commands that create what ``ref`` needs (the gallery in ``location`` when given)."""
    q = shlex.quote
    out = []
    if gallery_missing:
        where = f" --location {q(location)}" if location else ""
        out.append(f"aib gallery create {q(ref.gallery)} --resource-group {q(ref.resource_group)}{where}")
    out.append(
        f"aib gallery definition create {q(ref.gallery)} {q(ref.definition)} --resource-group "
        f"{q(ref.resource_group)} --publisher local --offer {q(ref.gallery)} --sku {q(ref.definition)} "
        f"--os-type {os_type} --os-state Generalized --hyper-v-generation {generation}"
    )
    return out


def first_region(spec: SharedImageDistributor) -> str | None:
    """The first region the target names (``targetRegions``, else the deprecated ``replicationRegions``)."""
    if spec.target_regions:
        return spec.target_regions[0].name
    return spec.replication_regions[0] if spec.replication_regions else None


async def check_definition(
    store: GalleryStore, ref: GalleryImageRef, os_type: str, generation: str, ctx: RunContext, location: str | None
) -> DefinitionRecord | None:
    """The definition, or None when it is missing and ``--create-missing`` lets the build create it; otherwise
    raise with the commands that create it."""
    try:
        return await run_sync(store.get_definition, ref)
    except NotFoundError:
        pass
    if GallerySettings.from_config(ctx.config).create_missing:
        return None
    gallery_missing = not await run_sync(store.gallery_exists, GalleryRef(ref.resource_group, ref.gallery))
    what = "gallery and image definition" if gallery_missing else "image definition"
    commands = "\n  ".join(
        create_commands(ref, os_type, generation, gallery_missing=gallery_missing, location=location)
    )
    raise DistributeError(
        f"{what} {ref.definition_id} does not exist; as in Azure, create it first:\n  {commands}\n"
        f"or let the build create it with --create-missing"
    )


async def ensure_definition(
    store: GalleryStore, ref: GalleryImageRef, artifact: Artifact, ctx: RunContext, location: str
) -> DefinitionRecord:
    """The target's image definition; created (with its gallery) only with the ``create_missing`` setting."""
    existing = await check_definition(store, ref, artifact.os_type, artifact.hyper_v_generation, ctx, location)
    if existing is not None:
        return existing
    gallery = GalleryRef(ref.resource_group, ref.gallery)
    record = DefinitionRecord(
        id=ref.definition_id,
        name=ref.definition,
        gallery=ref.gallery,
        resource_group=ref.resource_group,
        location=location,
        publisher="local",
        offer=ref.gallery,
        sku=ref.definition,
        os_type=artifact.os_type,
        os_state="Generalized",
        hyper_v_generation=artifact.hyper_v_generation,
    )
    ctx.log("local-gallery", f"creating image definition {ref.definition_id} (--create-missing)")

    def create() -> DefinitionRecord:
        store.create_gallery(gallery, location, exist_ok=True)
        return store.create_definition(record, exist_ok=True)

    return await run_sync(create)


def target_regions(spec: SharedImageDistributor, home: str) -> list[RegionSpec]:
    """The regions of a SharedImage target: the definition's own first, then ``targetRegions`` or the
    deprecated ``replicationRegions`` (the two are mutually exclusive)."""
    if spec.target_regions and spec.replication_regions:
        raise DistributeError("targetRegions and replicationRegions are mutually exclusive; use targetRegions")
    default_type = spec.storage_account_type or "Standard_LRS"
    asked: list[RegionSpec] = []
    if spec.target_regions:
        asked = [
            RegionSpec(r.name, r.replica_count, r.storage_account_type or default_type) for r in spec.target_regions
        ]
    elif spec.replication_regions:
        asked = [RegionSpec(name, 1, default_type) for name in spec.replication_regions]
    out: list[RegionSpec] = []
    seen: set[str] = set()
    for region in [*asked, RegionSpec(home, 1, default_type)]:
        try:
            check_name("region", region.name)
        except UsageError as exc:
            raise DistributeError(str(exc)) from exc
        if region.name.lower() not in seen:
            seen.add(region.name.lower())
            out.append(region)
    home_first = [r for r in out if r.name.lower() == home.lower()]
    return home_first + [r for r in out if r.name.lower() != home.lower()]


def _check_fits(definition: DefinitionRecord, ref: GalleryImageRef, os_type: str, generation: str) -> None:
    if definition.os_type != os_type:
        raise DistributeError(f"image definition {ref.definition_id} is {definition.os_type}; the image is {os_type}")
    if definition.hyper_v_generation != generation:
        raise DistributeError(
            f"image definition {ref.definition_id} is Hyper-V generation {definition.hyper_v_generation}; "
            f"the image is {generation} (the output keeps its source's generation)"
        )


class LocalSharedImageDistributor(DistributorBase[SharedImageDistributor]):
    """``SharedImage`` into the local gallery: a new image version replicated to each target region."""

    @classmethod
    def accepts(cls, spec: SharedImageDistributor, config: Config) -> bool:
        return is_local_arm_id(spec.gallery_image_id)

    @staticmethod
    def _target(spec: SharedImageDistributor, ctx: RunContext) -> tuple[GalleryImageRef, GalleryStore, GallerySettings]:
        try:
            ref = parse_gallery_image_id(spec.gallery_image_id)
        except UsageError as exc:
            raise DistributeError(f"galleryImageId: {exc}") from exc
        if ref.version == "latest":
            raise DistributeError("galleryImageId: a target version must be a number, not 'latest'")
        settings = GallerySettings.from_config(ctx.config)
        return ref, GalleryStore(settings), settings

    async def preflight(self, spec: SharedImageDistributor, image: DiskImage, ctx: RunContext) -> None:
        """Before any VM boots: the id is usable and the definition exists (or ``--create-missing``) and fits."""
        ref, store, settings = self._target(spec, ctx)
        location = first_region(spec) or settings.home_region
        definition = await check_definition(store, ref, image.os_type, image.hyper_v_generation, ctx, location)
        if definition is not None:
            _check_fits(definition, ref, image.os_type, image.hyper_v_generation)

    async def publish(self, artifact: Artifact, spec: SharedImageDistributor, ctx: RunContext) -> RunOutput:
        ref, store, settings = self._target(spec, ctx)
        definition = await ensure_definition(store, ref, artifact, ctx, first_region(spec) or settings.home_region)
        _check_fits(definition, ref, artifact.os_type, artifact.hyper_v_generation)
        regions = target_regions(spec, definition.location)
        attempts = 1
        if ref.version:
            if spec.versioning is not None:
                ctx.warn(f"{spec.run_output_name}: galleryImageId names version {ref.version}; versioning ignored")
        elif isinstance(spec.versioning, SourceVersioning):
            ref = ref.with_version(from_source(artifact.source_version))
        else:
            attempts = _LATEST_RETRIES
        for attempt in range(attempts):
            target = ref
            if not ref.version:
                major = spec.versioning.major if isinstance(spec.versioning, LatestVersioning) else -1
                target = ref.with_version(next_latest(await run_sync(store.version_names, ref), major))
            manifest = ImageManifest(
                id=target.id,
                name=target.version or "",
                kind="galleryImageVersion",
                resource_group=ref.resource_group,
                location=definition.location,
                gallery=ref.gallery,
                definition=ref.definition,
                os_type=artifact.os_type,
                hyper_v_generation=artifact.hyper_v_generation,
                exclude_from_latest=spec.exclude_from_latest,
                replication_mode=spec.replication_mode or "Full",
                artifact_tags=dict(spec.artifact_tags or {}),
                artifact=ArtifactInfo(sha256="", size=0, virtual_size=artifact.virtual_size),
                regions=[],
                run_id=ctx.run_id,
                template_name=ctx.template_name or artifact.template_name,
                template_digest=ctx.template_digest or artifact.template_digest,
                source_version=artifact.source_version,
            )
            try:
                published = await publish_image(
                    store,
                    target,
                    artifact,
                    ctx,
                    regions=regions,
                    run_output_name=spec.run_output_name,
                    type_name=self.type_name,
                    manifest=manifest,
                )
            except ConflictError:
                if attempt + 1 >= attempts:
                    raise
                continue
            return _run_output(spec.run_output_name, published)
        raise AssertionError("unreachable")


class LocalManagedImageDistributor(DistributorBase[ManagedImageDistributor]):
    """``ManagedImage`` into the local gallery: one image stored in its ``location``."""

    @classmethod
    def accepts(cls, spec: ManagedImageDistributor, config: Config) -> bool:
        return is_local_arm_id(spec.image_id)

    async def publish(self, artifact: Artifact, spec: ManagedImageDistributor, ctx: RunContext) -> RunOutput:
        try:
            ref = parse_managed_image_id(spec.image_id)
            location = check_name("region", spec.location)
        except UsageError as exc:
            raise DistributeError(f"{spec.run_output_name}: {exc}") from exc
        store = GalleryStore(GallerySettings.from_config(ctx.config))
        manifest = ImageManifest(
            id=ref.id,
            name=ref.name,
            kind="managedImage",
            resource_group=ref.resource_group,
            location=location,
            os_type=artifact.os_type,
            hyper_v_generation=artifact.hyper_v_generation,
            artifact_tags=dict(spec.artifact_tags or {}),
            artifact=ArtifactInfo(sha256="", size=0, virtual_size=artifact.virtual_size),
            regions=[],
            run_id=ctx.run_id,
            template_name=ctx.template_name,
            template_digest=ctx.template_digest,
            source_version=artifact.source_version,
        )
        published = await publish_image(
            store,
            ref,
            artifact,
            ctx,
            regions=[RegionSpec(location)],
            run_output_name=spec.run_output_name,
            type_name=self.type_name,
            manifest=manifest,
        )
        return _run_output(spec.run_output_name, published)


def _run_output(name: str, manifest: ImageManifest) -> RunOutput:
    return RunOutput(
        run_output_name=name,
        artifact_id=manifest.id,
        artifact_uri=None,
        provisioning_state="Succeeded",
        regions={r.region: Path(r.path).as_uri() for r in manifest.regions},
    )
