"""Local inputs travel by digest: the submitter uploads the files a build reads from its own disk to the artifact
store; the worker copies them out, verifies their sha256 and points the build at its copies.

The artifact store is a directory both sides can reach (NFS, SMB, a mounted bucket), holding
``sha256/<digest>`` blobs. Which files: every customizer/validator ``scriptUri``/``sourceUri`` that resolves
(after ``--map-uri``) to a local path, and a ``file://`` disk source (the template's or ``--source``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import anyio

from aib_sdk.errors import FetchError, UsageError
from aib_sdk.fetch import apply_uri_map
from aib_sdk.routing import local_file_path

_CHUNK = 1 << 20
_URI_KEYS = ("scriptUri", "sourceUri")


@dataclass(frozen=True)
class InputFile:
    """One local file of a build: the URI the template (or ``--source``) names, and its content digest."""

    uri: str
    sha256: str
    name: str
    size: int
    role: Literal["fetch", "source"] = "fetch"

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "sha256": self.sha256, "name": self.name, "size": self.size, "role": self.role}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputFile:
        role: Literal["fetch", "source"] = "source" if data.get("role") == "source" else "fetch"
        return cls(str(data["uri"]), str(data["sha256"]), str(data["name"]), int(data["size"]), role)


def local_path_of(uri: str, uri_map: Mapping[str, str], base: Path | None) -> Path | None:
    """The local file ``uri`` is read from (after ``uri_map``), or None when it is fetched over the network."""
    mapped = apply_uri_map(uri.strip(), uri_map)
    scheme = urlparse(mapped).scheme.lower()
    if scheme == "file":
        return local_file_path(mapped)
    if scheme:
        return None
    path = Path(mapped).expanduser()
    return path if path.is_absolute() else (base or Path.cwd()) / path


def step_uris(step_specs: Iterable[Any]) -> list[str]:
    """Every ``scriptUri``/``sourceUri`` of the given step specs (pydantic models)."""
    uris: list[str] = []
    for spec in step_specs:
        data = spec.model_dump(by_alias=True, exclude_none=True)
        uris += [data[key] for key in _URI_KEYS if isinstance(data.get(key), str) and data[key]]
    return uris


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ArtifactStore:
    """A content-addressed directory: ``put`` a file, ``get`` it back verified."""

    def __init__(self, location: str) -> None:
        parsed = urlparse(location)
        if parsed.scheme.lower() == "file":
            root = local_file_path(location)
        elif parsed.scheme and len(parsed.scheme) > 1:
            raise UsageError(
                f"[temporal] artifact_store {location!r}: only a shared directory (a path or file:// URI) is "
                "supported; mount the bucket or share and give its path"
            )
        else:
            root = Path(location).expanduser()
        self.root = root

    def blob(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise FetchError(f"not a sha256 digest: {digest!r}")
        return self.root / "sha256" / digest

    async def put(self, path: Path) -> tuple[str, int]:
        """Upload ``path`` (once per content); return its sha256 and size."""

        def upload() -> tuple[str, int]:
            digest, size = _hash_file(path)
            target = self.blob(digest)
            if target.is_file() and target.stat().st_size == size and _hash_file(target)[0] == digest:
                return digest, size  # already there, intact
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{digest}.{secrets.token_hex(4)}.tmp")
            try:
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            return digest, size

        try:
            return await anyio.to_thread.run_sync(upload)
        except OSError as exc:
            raise UsageError(f"cannot upload {path} to the artifact store {self.root}: {exc}") from exc

    async def get(self, item: InputFile, dest: Path) -> Path:
        """Copy ``item`` out of the store into ``dest/<sha256>/<name>``, verifying its digest; return the copy."""
        source = self.blob(item.sha256)
        name = Path(item.name).name or "input"
        final = dest / item.sha256 / name

        def download() -> Path:
            if final.is_file() and _hash_file(final)[0] == item.sha256:
                return final
            if not source.is_file():
                raise FetchError(f"input {item.uri} ({item.sha256}) is missing from the artifact store {self.root}")
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
            digest = hashlib.sha256()
            try:
                with open(source, "rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                if digest.hexdigest() != item.sha256:
                    raise FetchError(
                        f"input {item.uri}: the artifact store's copy does not match its digest "
                        f"(expected {item.sha256}, got {digest.hexdigest()})"
                    )
                tmp.replace(final)
            finally:
                tmp.unlink(missing_ok=True)
            return final

        try:
            return await anyio.to_thread.run_sync(download)
        except OSError as exc:
            raise FetchError(f"cannot read input {item.uri} from the artifact store {self.root}: {exc}") from exc


async def upload_inputs(
    store: ArtifactStore | None,
    fetch_uris: Iterable[str],
    source_uri: str | None,
    uri_map: Mapping[str, str],
    base: Path | None,
) -> list[InputFile]:
    """Upload every local input; raise :class:`UsageError` if there are some but no artifact store."""
    wanted: list[tuple[str, Path, Literal["fetch", "source"]]] = []
    seen: set[str] = set()
    for uri in fetch_uris:
        path = local_path_of(uri, uri_map, base)
        if path is not None and uri not in seen:
            seen.add(uri)
            wanted.append((uri, path, "fetch"))
    if source_uri and urlparse(source_uri).scheme.lower() == "file":
        wanted.append((source_uri, local_file_path(source_uri), "source"))
    if not wanted:
        return []
    if store is None:
        raise UsageError(
            f"the build reads local files ({', '.join(str(p) for _, p, _ in wanted[:3])}"
            f"{' …' if len(wanted) > 3 else ''}); set [temporal] artifact_store to a directory the workers share"
        )
    files: list[InputFile] = []
    for uri, path, role in wanted:
        if not await anyio.Path(path).is_file():
            raise UsageError(f"input {uri}: no such file {path}")
        digest, size = await store.put(path)
        files.append(InputFile(uri, digest, path.name, size, role))
    return files
