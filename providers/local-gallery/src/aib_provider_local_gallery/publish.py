"""Publishing one image (gallery version or managed image): claim, replicate to every region, commit or clean up."""

from __future__ import annotations

import contextlib
import functools
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.to_thread import run_sync

from aib_provider_local_gallery.ids import GalleryImageRef, ManagedImageRef
from aib_provider_local_gallery.manifest import ArtifactInfo, ImageManifest, RegionReplica
from aib_provider_local_gallery.replicate import CopyOutcome, CopyTarget, RegionError, Replicator
from aib_provider_local_gallery.store import DISK_NAME, Claim, GalleryStore
from aib_sdk.artifacts import Artifact
from aib_sdk.context import RunContext
from aib_sdk.errors import DistributeError, UsageError
from aib_sdk.events import TargetStatus

CLEANUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class RegionSpec:
    """A replica location asked for by the target."""

    name: str
    replica_count: int = 1
    storage_account_type: str = "Standard_LRS"


async def qcow2_of(artifact: Artifact, ctx: RunContext, run_output_name: str) -> Path:
    """The artifact as a standalone qcow2 file (the gallery's storage format), converted once per run."""
    if artifact.format == "qcow2":
        return artifact.path
    from aib_sdk import disks

    return await disks.converted(artifact, "qcow2", ctx, target_name=run_output_name)


BOOT_FILES = (("kernel", "vmlinuz"), ("initrd", "initrd"))


def boot_facts(artifact: Artifact, directory: Path) -> tuple[dict[str, Any] | None, list[tuple[Path, Path]]]:
    """The boot facts of the image the artifact was built from, and the boot files to keep in ``directory``.

    Only images that need them (direct kernel boot, pinned guest facts) carry any; the artifact names its base
    image in ``source_image``.
    """
    image = artifact.source_image
    if image is None:
        return None, []
    facts: dict[str, Any] = {
        "diskInterface": image.disk_interface,
        "access": image.access,
        "attributes": dict(image.attributes),
    }
    if image.kernel_args:
        facts["kernelArgs"] = image.kernel_args
    copies = []
    for key, name in BOOT_FILES:
        source = getattr(image, key)
        if source is not None:
            facts[key] = str(directory / "boot" / name)
            copies.append((Path(source), directory / "boot" / name))
    return facts, copies


def _copy_boot_files(copies: list[tuple[Path, Path]]) -> None:
    for source, target in copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


async def publish_image(
    store: GalleryStore,
    ref: GalleryImageRef | ManagedImageRef,
    artifact: Artifact,
    ctx: RunContext,
    *,
    regions: list[RegionSpec],
    run_output_name: str,
    type_name: str,
    manifest: ImageManifest,
) -> ImageManifest:
    """Copy ``artifact`` to every region, then make ``ref`` visible with ``manifest`` (its regions filled in).

    With ``manifest.replication_mode == "Shallow"`` only the first (primary) region gets a copy; every other region
    is recorded as a ``reference`` to it.

    Raises :class:`~aib_sdk.errors.ConflictError` if ``ref`` exists or is being published. On failure or
    cancellation every file written is removed (shielded) and nothing becomes visible.
    """
    source = await qcow2_of(artifact, ctx, run_output_name)
    expected = artifact.sha256 if source == artifact.path else None  # a conversion has a digest of its own
    names = [r.name for r in regions]
    copied = names[:1] if manifest.replication_mode == "Shallow" else names
    token = secrets.token_hex(6)
    region_dirs = []
    for name in names:
        with contextlib.suppress(UsageError):
            region_dirs.append(str(store.region_path(name, ref)))
    journaled = {"directory": str(store.path_of(ref)), "token": token, "regionDirectories": region_dirs}
    entry = await ctx.journal.acquire("local-gallery.claim", journaled, f"gallery claim on {ref.id}")
    try:
        with anyio.CancelScope(shield=True):  # a claim taken must reach the try below, which releases it
            claim: Claim = await run_sync(functools.partial(store.claim, ref, ctx.run_id, names, token=token))
    except BaseException:
        await ctx.journal.release(entry)  # nothing was claimed
        raise
    status: dict[str, str] = {}

    def emit(region: str, state: str, message: str = "") -> None:
        status[region] = state
        ctx.emit(
            TargetStatus(
                run_output_name=run_output_name,
                type=type_name,
                region=region,
                state=state,
                message=message,
                artifact_id=ref.id,
            )
        )

    def progress(region: str, done: int, total: int) -> None:
        ctx.progress("replicate", f"{ref.id} → {region}", done, total, target=run_output_name, region=region)

    def done(outcome: CopyOutcome) -> None:
        emit(outcome.region, "Succeeded", f"{outcome.method}, sha256 {outcome.sha256}")

    targets = []
    for name in copied:
        directory = store.region_path(name, ref)
        targets.append(
            CopyTarget(name, directory / f".pending-{ctx.run_id}-{claim.token}.qcow2", directory / DISK_NAME)
        )
    settings = store.settings
    try:
        for name in names:
            emit(name, "Running")
        manifest.boot, boot_files = boot_facts(artifact, claim.directory)
        await run_sync(_copy_boot_files, boot_files)
        replicator = Replicator(
            source,
            targets,
            max_parallel=settings.max_parallel_regions,
            expected_sha256=expected,
            fsync=settings.fsync,
            chunk_size=settings.chunk_size,
            progress_interval=settings.progress_interval,
            on_progress=progress,
            on_done=done,
        )
        outcomes = await replicator.run()
        primary = outcomes[0]
        for name in names[len(copied) :]:  # Shallow: the other regions point at the primary copy
            outcomes.append(CopyOutcome(name, primary.path, primary.sha256, primary.size, "reference"))
            done(outcomes[-1])
        by_region = {r.name: r for r in regions}
        manifest.artifact = ArtifactInfo(
            sha256=replicator.sha256, size=replicator.size, virtual_size=artifact.virtual_size, format="qcow2"
        )
        manifest.regions = [
            RegionReplica(
                region=o.region,
                replica_count=by_region[o.region].replica_count,
                storage_account_type=by_region[o.region].storage_account_type,
                path=str(o.path),
                sha256=o.sha256,
                size=o.size,
                method=o.method,
            )
            for o in outcomes
        ]
        with anyio.CancelScope(shield=True):  # once committing, finish: the version is complete and verified
            await run_sync(store.commit, claim, manifest)
        await ctx.journal.release(entry)
    except BaseException as exc:
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT) as bounded:
            await run_sync(store.abort, claim, abandon_on_cancel=True)
        if not bounded.cancelled_caught:
            await ctx.journal.release(entry)
        else:
            ctx.warn(
                f"{run_output_name}: removing the partial copies of {ref.id} is taking longer than "
                f"{CLEANUP_TIMEOUT:g}s; it goes on in the background"
            )
        for name in names:
            if status.get(name) != "Failed":
                failed_here = isinstance(exc, RegionError) and exc.region == name
                state = "Failed" if failed_here or not cancelled else "Canceled"
                emit(name, state, str(exc) if failed_here or not cancelled else "cancelled")
        if isinstance(exc, OSError):
            raise DistributeError(f"publishing {ref.id}: {exc}") from exc
        raise
    return manifest
