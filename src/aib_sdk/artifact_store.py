"""Content-addressed artifact stores: files kept under ``sha256/<digest>``, written once, read back verified.

A store is named by a location in ``[temporal] artifact_store``: a directory (a path or ``file://`` URI, built in),
``s3://bucket/prefix`` (the ``aib-provider-s3-vhd`` plugin) or ``az://account/container/prefix`` (the
``aib-provider-azure`` plugin). Plugins register an opener per URI scheme (hook ``aib_register_artifact_stores``);
a backend (:class:`~aib_sdk.protocols.BlobStore`) only moves bytes. Hashing and verification live here, once:
:meth:`ArtifactStore.put` skips content that is already stored, :meth:`ArtifactStore.get` hashes what it
downloaded and refuses a copy that does not match its digest, so a tampered store is caught on the reader.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import anyio

from aib_sdk.errors import AibError, FetchError, UsageError
from aib_sdk.routing import local_file_path

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.plugins.manager import PluginManager
    from aib_sdk.protocols import BlobStore

CHUNK = 1 << 20


def hash_file(path: Path) -> tuple[str, int]:
    """The sha256 and size of ``path`` (sync; call it in a thread)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def blob_key(digest: str) -> str:
    """The store key of a digest (``sha256/<digest>``); refuses anything that is not a sha256 hex digest."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise FetchError(f"not a sha256 digest: {digest!r}")
    return f"sha256/{digest}"


def store_scheme(location: str) -> str:
    """The URI scheme that picks a store's backend (``file`` for a plain path, a Windows drive included)."""
    scheme = urlparse(location).scheme.lower()
    return scheme if len(scheme) > 1 else "file"


class DirectoryStore:
    """A directory every submitter and worker mounts (NFS, SMB, a mounted bucket): the built-in backend."""

    def __init__(self, location: str) -> None:
        self.root = local_file_path(location) if "://" in location else Path(location).expanduser()
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    async def has(self, key: str, sha256: str, size: int) -> bool:
        path = self._path(key)

        def intact() -> bool:  # local and cheap: re-hash, so a damaged blob is replaced
            return path.is_file() and path.stat().st_size == size and hash_file(path)[0] == sha256

        return await anyio.to_thread.run_sync(intact)

    async def upload(self, key: str, path: Path, sha256: str, size: int) -> None:
        target = self._path(key)

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
            try:
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(copy)

    async def download(self, key: str, dest: Path) -> bool:
        source = self._path(key)

        def copy() -> bool:
            if not source.is_file():
                return False
            with open(source, "rb") as src, open(dest, "wb") as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            return True

        return await anyio.to_thread.run_sync(copy)


def open_directory_store(location: str, config: Config) -> BlobStore:
    """The built-in opener for paths and ``file://`` URIs."""
    return DirectoryStore(location)


class ArtifactStore:
    """A verifying, content-addressed face over a :class:`~aib_sdk.protocols.BlobStore`."""

    def __init__(self, backend: BlobStore) -> None:
        self.backend = backend
        self.location = backend.location

    async def put(self, path: Path) -> tuple[str, int]:
        """Store ``path`` (once per content); return its sha256 and size."""
        try:
            digest, size = await anyio.to_thread.run_sync(hash_file, path)
            key = blob_key(digest)
            if not await self.backend.has(key, digest, size):
                await self.backend.upload(key, path, digest, size)
        except OSError as exc:
            raise UsageError(f"cannot upload {path} to the artifact store {self.location}: {exc}") from exc
        except AibError as exc:
            raise UsageError(f"cannot upload {path} to the artifact store {self.location}: {exc}") from exc
        return digest, size

    async def get(self, digest: str, dest: Path, *, what: str) -> Path:
        """Download ``digest`` to ``dest`` (created through a temporary file) and verify it; return ``dest``.

        ``what`` names the file in errors. A copy already at ``dest`` with the right digest is reused.
        """
        key = blob_key(digest)
        if await anyio.to_thread.run_sync(lambda: dest.is_file() and hash_file(dest)[0] == digest):
            return dest
        await anyio.Path(dest.parent).mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        try:
            try:
                found = await self.backend.download(key, tmp)
            except OSError as exc:
                raise FetchError(f"cannot read {what} from the artifact store {self.location}: {exc}") from exc
            except AibError as exc:
                raise FetchError(f"cannot read {what} from the artifact store {self.location}: {exc}") from exc
            if not found:
                raise FetchError(f"{what} ({digest}) is missing from the artifact store {self.location}")
            got, _ = await anyio.to_thread.run_sync(hash_file, tmp)
            if got != digest:
                raise FetchError(
                    f"{what}: the artifact store's copy does not match its digest (expected {digest}, got {got})"
                )
            await anyio.Path(tmp).replace(dest)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.Path(tmp).unlink(missing_ok=True)
        return dest


def open_artifact_store(location: str, plugins: PluginManager, config: Config) -> ArtifactStore:
    """The store ``location`` names, through the plugin registered for its scheme."""
    scheme = store_scheme(location)
    openers = plugins.registry.artifact_stores
    opener = openers.get(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in sorted(openers)) or "none"
        hint = {"s3": " (install aib-provider-s3-vhd)", "az": " (install aib-provider-azure)"}.get(scheme, "")
        raise UsageError(f"artifact store {location!r}: no plugin stores {scheme}://{hint}; available: {known}")
    return ArtifactStore(opener(location, config))
