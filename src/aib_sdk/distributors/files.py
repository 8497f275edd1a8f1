"""Local disk outputs built into the core: ``DiskFile`` (any format) and AIB's ``VHD`` to a ``file://`` URI.

Both publish atomically: the disk is written to a hidden temporary file in the destination folder, fsynced,
renamed into place and the folder fsynced; on failure or cancellation the temporary file is removed. An existing
file at the destination is replaced atomically (readers see the old disk or the new one, never a mix), and only
when an earlier run of the same target wrote it (:func:`aib_sdk.trust.check_output_file`); otherwise the target is
refused before any VM boots.

A target with ``artifactTags`` also gets a sidecar manifest ``<file>.json`` next to the disk (written after it,
atomically): the tags, the file's sha256 and size, and the facts of the build it came from.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import anyio
import anyio.to_thread
from pydantic import BaseModel

from aib_sdk import disks
from aib_sdk.artifacts import Artifact, DiskImage, RunOutput
from aib_sdk.errors import DistributeError, UsageError
from aib_sdk.models import specs
from aib_sdk.routing import local_file_path, uri_scheme
from aib_sdk.trust import check_output_file, output_owner, record_output_file

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.context import RunContext

# DiskFile (format, compression) → the cached conversion it needs.
_DISKFILE_TARGETS: dict[tuple[str, str], disks.OutputFormat] = {
    ("qcow2", "none"): "qcow2",
    ("qcow2", "zstd"): "qcow2-zstd",
    ("qcow2", "zlib"): "qcow2-zlib",
    ("raw", "none"): "raw",
    ("vpc", "none"): "vhd-dynamic",
    ("vmdk", "none"): "vmdk",
}


def _destination(uri: str) -> Path:
    """The local path of a ``file://`` target; refuses relative paths, ``..`` and directory-looking URIs."""
    path = local_file_path(uri)
    if uri.endswith("/") or path == Path("/"):
        raise UsageError(f"file URI must name a file, not a folder: {uri!r}")
    return path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def check_destination(destination: Path, ctx: RunContext, target: str) -> None:
    """Refuse a destination that holds a file this target did not write (:func:`aib_sdk.trust.check_output_file`)."""
    owner = output_owner(ctx.template_name, target)
    await anyio.to_thread.run_sync(check_output_file, ctx.config.home, destination, owner)


async def publish_file(source: Path, destination: Path, ctx: RunContext, *, target: str, guard: bool = False) -> None:
    """Copy ``source`` to ``destination`` atomically (sparse copy, fsync, rename, fsync of the folder).

    With ``guard`` an existing file is replaced only when it is an unchanged earlier output of this target.
    """
    folder = destination.parent
    try:
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DistributeError(f"{target}: cannot create folder {folder}: {exc}") from exc
    if await anyio.Path(destination).is_dir():
        raise DistributeError(f"{target}: destination {destination} is a folder")
    if guard:
        await check_destination(destination, ctx, target)
    tmp = folder / f".{destination.name}.{secrets.token_hex(4)}.part"

    def progress(done: int, total: int | None) -> None:
        ctx.progress("copy", destination.name, done, total, target=target)

    try:
        await disks.copy_sparse(source, tmp, on_progress=progress)
        if guard:
            await check_destination(destination, ctx, target)
        await anyio.Path(tmp).rename(destination)
        await anyio.to_thread.run_sync(_fsync_dir, folder)
        if guard:
            owner = output_owner(ctx.template_name, target)
            await anyio.to_thread.run_sync(record_output_file, ctx.config.home, destination, owner)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DistributeError(f"{target}: cannot write {destination}: {exc}") from exc
        raise


def sidecar_path(destination: Path) -> Path:
    """``<destination>.json``: where a target with ``artifactTags`` writes its manifest."""
    return destination.with_name(destination.name + ".json")


async def write_sidecar(
    artifact: Artifact, source: Path, destination: Path, spec: specs.DistributorSpec, ctx: RunContext, fmt: str
) -> Path | None:
    """``<destination>.json`` with the target's ``artifactTags``, the disk's digest and the build's facts (only when
    the target has tags); written to a temporary file and renamed into place."""
    if not spec.artifact_tags:
        return None
    sha256 = await disks.artifact_sha256(artifact, source)
    manifest = {
        "file": destination.name,
        "uri": destination.as_uri(),
        "format": fmt,
        "sha256": sha256,
        "size": (await anyio.Path(destination).stat()).st_size,
        "artifactTags": dict(spec.artifact_tags),
        "runOutputName": spec.run_output_name,
        "source": {
            "runId": ctx.run_id or artifact.run_id,
            "templateName": ctx.template_name or artifact.template_name,
            "templateDigest": ctx.template_digest or artifact.template_digest,
            "exactVersion": artifact.source_version,
            "osType": artifact.os_type,
            "hyperVGeneration": artifact.hyper_v_generation,
            "virtualSize": artifact.virtual_size,
            "capturedSha256": await disks.artifact_sha256(artifact, artifact.path),
        },
    }
    sidecar = sidecar_path(destination)
    tmp = sidecar.with_name(f".{sidecar.name}.{secrets.token_hex(4)}.part")
    try:
        await anyio.Path(tmp).write_text(json.dumps(manifest, indent=2) + "\n")
        await check_destination(sidecar, ctx, spec.run_output_name)  # never replaces someone else's file
        await anyio.Path(tmp).rename(sidecar)
        owner = output_owner(ctx.template_name, spec.run_output_name)
        await anyio.to_thread.run_sync(record_output_file, ctx.config.home, sidecar, owner)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DistributeError(f"{spec.run_output_name}: cannot write {sidecar}: {exc}") from exc
        raise
    return sidecar


class DiskFileDistributor:
    """``DiskFile``: the captured disk as a local file in qcow2 (optionally compressed), raw, VHD or VMDK.

    ``format: vpc`` writes a dynamic VHD (use AIB's ``VHD`` type for Azure's fixed VHD).
    """

    type_name: ClassVar[str] = "DiskFile"
    spec_model: ClassVar[type[BaseModel]] = specs.DiskFileDistributor

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """Claims ``file://`` URIs; raises :class:`UsageError` for one that is relative or holds ``..``."""
        if not isinstance(spec, specs.DiskFileDistributor) or uri_scheme(spec.uri) != "file":
            return False
        _destination(spec.uri)
        return True

    async def preflight(self, spec: BaseModel, image: DiskImage, ctx: RunContext) -> None:
        """Before any VM boots: refuse a destination holding a file this target did not write."""
        assert isinstance(spec, specs.DiskFileDistributor)
        destination = _destination(spec.uri)
        await check_destination(destination, ctx, spec.run_output_name)
        if spec.artifact_tags:
            await check_destination(sidecar_path(destination), ctx, spec.run_output_name)

    async def publish(self, artifact: Artifact, spec: BaseModel, ctx: RunContext) -> RunOutput:
        assert isinstance(spec, specs.DiskFileDistributor)
        name = spec.run_output_name
        target = _DISKFILE_TARGETS.get((spec.format, spec.compression))
        if target is None:
            raise UsageError(f"{name}: compression {spec.compression} applies to format qcow2 only, not {spec.format}")
        destination = _destination(spec.uri)
        source = await disks.converted(artifact, target, ctx, target_name=name)
        await publish_file(source, destination, ctx, target=name, guard=True)
        await write_sidecar(artifact, source, destination, spec, ctx, spec.format)
        return RunOutput(run_output_name=name, artifact_uri=destination.as_uri())


class LocalVhdDistributor:
    """AIB's ``VHD`` written to a local file: a fixed VHD whose size is a whole MiB, as Azure requires.

    With no ``uri`` the VHD goes to ``<run staging directory>/<runOutputName>.vhd``.
    """

    type_name: ClassVar[str] = "VHD"
    spec_model: ClassVar[type[BaseModel]] = specs.VhdDistributor

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """Claims a missing ``uri`` and ``file://`` URIs; raises :class:`UsageError` for unsafe file URIs."""
        if not isinstance(spec, specs.VhdDistributor):
            return False
        if spec.uri is None:
            return True
        if uri_scheme(spec.uri) != "file":
            return False
        _destination(spec.uri)
        return True

    async def preflight(self, spec: BaseModel, image: DiskImage, ctx: RunContext) -> None:
        """Before any VM boots: refuse a ``file://`` destination holding a file this target did not write."""
        assert isinstance(spec, specs.VhdDistributor)
        if spec.uri is not None:
            destination = _destination(spec.uri)
            await check_destination(destination, ctx, spec.run_output_name)
            if spec.artifact_tags:
                await check_destination(sidecar_path(destination), ctx, spec.run_output_name)

    async def publish(self, artifact: Artifact, spec: BaseModel, ctx: RunContext) -> RunOutput:
        assert isinstance(spec, specs.VhdDistributor)
        name = spec.run_output_name
        guard = spec.uri is not None
        if spec.uri is not None:
            destination = _destination(spec.uri)
        else:
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise UsageError(f"runOutputName {name!r} cannot name a file")
            destination = ctx.staging.run_directory / f"{name}.vhd"
        source = await disks.converted(artifact, "vhd", ctx, target_name=name)
        await publish_file(source, destination, ctx, target=name, guard=guard)
        await write_sidecar(artifact, source, destination, spec, ctx, "vpc")
        return RunOutput(run_output_name=name, artifact_uri=destination.as_uri())
