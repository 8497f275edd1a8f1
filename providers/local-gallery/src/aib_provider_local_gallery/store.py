"""The gallery on disk. Every method here is synchronous filesystem work: call it through ``anyio.to_thread``.

Layout (directory names lower-cased, since ARM names are case-insensitive; records keep the spelling)::

    <root>/resourceGroups/<rg>/galleries/<g>/gallery.json
    <root>/resourceGroups/<rg>/galleries/<g>/images/<d>/definition.json
    <root>/resourceGroups/<rg>/galleries/<g>/images/<d>/versions/<v>/manifest.json
    <root>/resourceGroups/<rg>/images/<name>/manifest.json                      (managed images)
    <region root>/<same relative path>/disk.qcow2                                (each region's copy)

An image (version or managed image) is *visible* only when its ``manifest.json`` exists. Publishing first
*claims* the image directory with an exclusive ``mkdir`` (a second publisher gets :class:`ConflictError` before
copying a byte), writes region copies as ``.pending-<runid>.qcow2`` files, renames them when verified, and
finally links the manifest into place (an exclusive, atomic step). A claim records its owner (host, pid, run id)
so that one left by a killed process can be reclaimed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from aib_provider_local_gallery.ids import (
    GalleryImageRef,
    GalleryRef,
    LocalRef,
    ManagedImageRef,
    check_name,
    parse_version,
)
from aib_provider_local_gallery.manifest import DefinitionRecord, GalleryRecord, ImageManifest
from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.versioning import latest_of
from aib_sdk.errors import ConflictError, UsageError
from aib_sdk.journal import process_start_time

MANIFEST = "manifest.json"
OWNER = ".owner.json"
DISK_NAME = "disk.qcow2"


class NotFoundError(UsageError):
    """A gallery, definition, version or managed image does not exist."""


def _rel(ref: LocalRef) -> PurePosixPath:
    base = PurePosixPath("resourceGroups", ref.resource_group.lower())
    if isinstance(ref, ManagedImageRef):
        return base / "images" / ref.name.lower()
    path = base / "galleries" / ref.gallery.lower()
    if isinstance(ref, GalleryImageRef):
        path = path / "images" / ref.definition.lower()
        if ref.version and ref.version != "latest":
            path = path / "versions" / ref.version
    return path


def _write_json_exclusive(path: Path, record: BaseModel, *, durable: bool = True) -> bool:
    """Write ``record`` to ``path`` unless it exists; atomic (temp file + ``link``). False if it existed."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    data = record.model_dump_json(indent=2, by_alias=True).encode() + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(path.parent)
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _owner_alive(owner: dict[str, object]) -> bool:
    """Whether the process that wrote a claim's owner file runs (pid and, when recorded, its start time)."""
    pid = int(str(owner.get("pid", 0)))
    start = process_start_time(pid) if pid > 0 else None
    return start is not None and owner.get("start") in (None, start)


def pending_claim(directory: Path, token: str) -> Path:
    """Where a claim on ``directory`` is prepared before it is renamed into place (hidden from listings)."""
    return directory.with_name(f".claim-{token}")


def release_claim(data: dict[str, object]) -> str:
    """Remove a claim a dead run journaled (sync), unless it was committed or is not (any more) that run's."""
    directory, token = Path(str(data["directory"])), str(data["token"])
    shutil.rmtree(pending_claim(directory, token), ignore_errors=True)
    if (directory / MANIFEST).exists():
        return f"{directory} was committed: left in place"
    try:
        owner = json.loads((directory / OWNER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        owner = {}
    if owner.get("token") != token:
        return f"{directory}: not held by this run, left alone"
    regions = data.get("regionDirectories")
    for region in regions if isinstance(regions, list) else []:
        shutil.rmtree(str(region), ignore_errors=True)
    graveyard = directory.with_name(f".stale-{secrets.token_hex(4)}")
    directory.rename(graveyard)
    shutil.rmtree(graveyard, ignore_errors=True)
    return f"removed the unfinished gallery claim {directory} and its region copies"


@dataclass(frozen=True)
class Claim:
    """A publisher's hold on an image directory until it commits or aborts."""

    ref: GalleryImageRef | ManagedImageRef
    directory: Path
    run_id: str
    token: str
    regions: tuple[str, ...]


class GalleryStore:
    """Reads and writes the gallery under ``settings.root``."""

    def __init__(self, settings: GallerySettings) -> None:
        self.settings = settings
        self.root = settings.root

    # Paths --------------------------------------------------------------------------------------------------

    def path_of(self, ref: LocalRef) -> Path:
        return self.root / _rel(ref)

    def region_path(self, region: str, ref: GalleryImageRef | ManagedImageRef) -> Path:
        """The directory holding ``ref``'s copy in ``region``."""
        return self.settings.region_root(region) / _rel(ref)

    # Galleries and definitions ------------------------------------------------------------------------------

    def create_gallery(self, ref: GalleryRef, location: str | None = None, *, exist_ok: bool = False) -> GalleryRecord:
        location = check_name("region", location or self.settings.home_region)
        directory = self.path_of(ref)
        directory.mkdir(parents=True, exist_ok=True)
        record = GalleryRecord(id=ref.id, name=ref.gallery, resource_group=ref.resource_group, location=location)
        if not _write_json_exclusive(directory / "gallery.json", record):
            if exist_ok:
                return self.get_gallery(ref)
            raise ConflictError(f"gallery {ref.id} already exists")
        return record

    def get_gallery(self, ref: GalleryRef) -> GalleryRecord:
        file = self.path_of(ref) / "gallery.json"
        try:
            return GalleryRecord.model_validate_json(file.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"gallery {ref.id} does not exist") from None

    def create_definition(self, record: DefinitionRecord, *, exist_ok: bool = False) -> DefinitionRecord:
        ref = GalleryImageRef(record.resource_group, record.gallery, record.name)
        self.get_gallery(GalleryRef(ref.resource_group, ref.gallery))
        for value in (record.publisher, record.offer, record.sku):
            check_name("publisher/offer/sku", value)
        check_name("region", record.location)
        directory = self.path_of(ref)
        (directory / "versions").mkdir(parents=True, exist_ok=True)
        if not _write_json_exclusive(directory / "definition.json", record):
            if exist_ok:
                return self.get_definition(ref)
            raise ConflictError(f"image definition {ref.definition_id} already exists")
        return record

    def get_definition(self, ref: GalleryImageRef) -> DefinitionRecord:
        file = self.path_of(ref.with_version(None)) / "definition.json"
        try:
            return DefinitionRecord.model_validate_json(file.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"image definition {ref.definition_id} does not exist") from None

    def gallery_exists(self, ref: GalleryRef) -> bool:
        return (self.path_of(ref) / "gallery.json").is_file()

    def galleries(self) -> list[GalleryRecord]:
        out: list[GalleryRecord] = []
        for file in sorted(self.root.glob("resourceGroups/*/galleries/*/gallery.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(GalleryRecord.model_validate_json(file.read_bytes()))
        return out

    def definitions(self, ref: GalleryRef) -> list[DefinitionRecord]:
        out: list[DefinitionRecord] = []
        for file in sorted(self.path_of(ref).glob("images/*/definition.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(DefinitionRecord.model_validate_json(file.read_bytes()))
        return out

    def managed_images(self) -> list[ImageManifest]:
        out: list[ImageManifest] = []
        for file in sorted(self.root.glob(f"resourceGroups/*/images/*/{MANIFEST}")):
            with contextlib.suppress(OSError, ValueError):
                out.append(ImageManifest.model_validate_json(file.read_bytes()))
        return out

    # Images -------------------------------------------------------------------------------------------------

    def versions(self, ref: GalleryImageRef) -> list[ImageManifest]:
        """The visible versions of a definition, oldest version number first."""
        self.get_definition(ref)
        out: list[ImageManifest] = []
        versions_dir = self.path_of(ref.with_version(None)) / "versions"
        for entry in versions_dir.iterdir() if versions_dir.is_dir() else ():
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(OSError, ValueError):
                out.append(ImageManifest.model_validate_json((entry / MANIFEST).read_bytes()))
        return sorted(out, key=lambda m: parse_version(m.name))

    def version_names(self, ref: GalleryImageRef) -> list[str]:
        """Every version number in use, including ones being published (so a new number never collides)."""
        versions_dir = self.path_of(ref.with_version(None)) / "versions"
        names = []
        for entry in versions_dir.iterdir() if versions_dir.is_dir() else ():
            if not entry.name.startswith("."):
                with contextlib.suppress(UsageError):
                    parse_version(entry.name)
                    names.append(entry.name)
        return names

    def resolve_version(self, ref: GalleryImageRef) -> GalleryImageRef:
        """``…/versions/latest`` → the highest version not excluded from latest; others unchanged."""
        if ref.version != "latest":
            return ref
        manifests = self.versions(ref)
        latest = latest_of((m.name, m.exclude_from_latest) for m in manifests)
        if latest is None:
            raise NotFoundError(f"image definition {ref.definition_id} has no version that is not excluded from latest")
        return ref.with_version(latest)

    def get_image(self, ref: GalleryImageRef | ManagedImageRef) -> ImageManifest:
        if isinstance(ref, GalleryImageRef):
            if not ref.version:
                raise UsageError(f"{ref.id} names a definition, not a version")
            ref = self.resolve_version(ref)
        file = self.path_of(ref) / MANIFEST
        try:
            return ImageManifest.model_validate_json(file.read_bytes())
        except FileNotFoundError:
            what = "image version" if isinstance(ref, GalleryImageRef) else "managed image"
            raise NotFoundError(f"{what} {ref.id} does not exist") from None

    # Publication --------------------------------------------------------------------------------------------

    def claim(
        self, ref: GalleryImageRef | ManagedImageRef, run_id: str, regions: list[str], *, token: str | None = None
    ) -> Claim:
        """Take the image's directory for this run, or raise :class:`ConflictError` if it is taken.

        The directory appears with its owner file already inside (built as ``.claim-<token>``, then renamed into
        place), so a claim is never ownerless: one left by a killed process can always be judged and reclaimed.
        An empty directory in its place (left by an older claim killed mid-way) is simply replaced.
        """
        directory = self.path_of(ref)
        directory.parent.mkdir(parents=True, exist_ok=True)
        token = token or secrets.token_hex(6)
        me = os.getpid()
        owner = {
            "host": socket.gethostname(),
            "pid": me,
            "start": process_start_time(me),
            "runId": run_id,
            "token": token,
            "regions": regions,
        }
        pending = pending_claim(directory, token)
        for _attempt in range(3):
            pending.mkdir()
            try:
                (pending / OWNER).write_text(json.dumps(owner), encoding="utf-8")
                pending.rename(directory)  # atomic; refused when a non-empty directory is there
            except OSError as exc:
                shutil.rmtree(pending, ignore_errors=True)
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if (directory / MANIFEST).exists():
                    raise ConflictError(f"{ref.id} already exists") from None
                if not self._reclaim_if_stale(ref, directory):
                    raise ConflictError(f"{ref.id} is being published by another build") from None
                continue
            return Claim(ref, directory, run_id, token, tuple(regions))
        raise ConflictError(f"{ref.id} is being published by another build")

    def _reclaim_if_stale(self, ref: GalleryImageRef | ManagedImageRef, directory: Path) -> bool:
        """Remove a claim left by a dead process on this host; False while its owner may still be working."""
        try:
            owner = json.loads((directory / OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if owner.get("host") != socket.gethostname() or _owner_alive(owner):
            return False
        graveyard = directory.with_name(f".stale-{secrets.token_hex(4)}")
        try:
            directory.rename(graveyard)
        except OSError:
            return False
        for region in owner.get("regions", []):
            with contextlib.suppress(UsageError):
                self._remove_region_dir(region, ref)
        shutil.rmtree(graveyard, ignore_errors=True)
        return True

    def commit(self, claim: Claim, manifest: ImageManifest) -> None:
        """Make the image visible: one exclusive link of its manifest."""
        if not _write_json_exclusive(claim.directory / MANIFEST, manifest, durable=self.settings.fsync):
            raise ConflictError(f"{claim.ref.id} already exists")
        (claim.directory / OWNER).unlink(missing_ok=True)

    def abort(self, claim: Claim) -> None:
        """Remove everything a claim wrote (region copies, the claimed directory) unless it was committed."""
        if (claim.directory / MANIFEST).exists():
            return
        for region in claim.regions:
            self._remove_region_dir(region, claim.ref)
        shutil.rmtree(claim.directory, ignore_errors=True)
        self._prune(claim.directory.parent, self.root)

    def _remove_region_dir(self, region: str, ref: GalleryImageRef | ManagedImageRef) -> None:
        directory = self.region_path(region, ref)
        shutil.rmtree(directory, ignore_errors=True)
        self._prune(directory.parent, self.settings.region_root(region))

    @staticmethod
    def _prune(directory: Path, stop: Path) -> None:
        """Remove empty directories from ``directory`` up to (not including) ``stop``."""
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # Deletion -----------------------------------------------------------------------------------------------

    def delete(self, ref: LocalRef) -> None:
        """Delete a version or managed image (with its region copies), or an empty definition or gallery."""
        if isinstance(ref, GalleryRef):
            if self.definitions(ref):
                raise UsageError(f"gallery {ref.id} still holds image definitions; delete them first")
            self.get_gallery(ref)
            self._retire(self.path_of(ref))
            return
        if isinstance(ref, GalleryImageRef) and not ref.version:
            if self.version_names(ref):
                raise UsageError(f"image definition {ref.definition_id} still holds versions; delete them first")
            self.get_definition(ref)
            self._retire(self.path_of(ref))
            return
        if isinstance(ref, GalleryImageRef) and ref.version == "latest":
            raise UsageError("delete needs an explicit version, not 'latest'")
        directory = self.path_of(ref)
        manifest: ImageManifest | None = None
        with contextlib.suppress(OSError, ValueError):
            manifest = ImageManifest.model_validate_json((directory / MANIFEST).read_bytes())
        if manifest is None:
            if directory.is_dir() and not self._reclaim_if_stale(ref, directory):
                raise ConflictError(f"{ref.id} is being published by another build")
            if not directory.is_dir():
                raise NotFoundError(f"{ref.id} does not exist")
            return
        self._retire(directory)
        for replica in manifest.regions:
            with contextlib.suppress(UsageError):
                self._remove_region_dir(replica.region, ref)

    def _retire(self, directory: Path) -> None:
        """Hide ``directory`` with one rename, then remove it."""
        graveyard = directory.with_name(f".deleting-{secrets.token_hex(4)}")
        directory.rename(graveyard)
        shutil.rmtree(graveyard, ignore_errors=True)
