"""Local inputs travel by digest: the submitter uploads the files a build reads from its own disk to the artifact
store; the worker copies them out, verifies their sha256 and points the build at its copies.

The artifact store (:mod:`aib_sdk.artifact_store`: a shared directory, an S3 bucket or an Azure container) holds
``sha256/<digest>`` blobs. Which files: every customizer/validator ``scriptUri``/``sourceUri`` that resolves
(after ``--map-uri``) to a local path, and a ``file://`` disk source (the template's or ``--source``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import anyio

from aib_sdk.artifact_store import ArtifactStore
from aib_sdk.errors import UsageError
from aib_sdk.fetch import apply_uri_map
from aib_sdk.routing import local_file_path

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


async def fetch_input(store: ArtifactStore, item: InputFile, dest: Path) -> Path:
    """Copy ``item`` out of the store into ``dest/<sha256>/<name>``, verified against its digest; return the copy."""
    name = Path(item.name).name or "input"
    return await store.get(item.sha256, dest / item.sha256 / name, what=f"input {item.uri}")


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
            f"{' …' if len(wanted) > 3 else ''}); set [temporal] artifact_store to a store the workers share "
            "(a directory, s3:// or az://)"
        )
    files: list[InputFile] = []
    for uri, path, role in wanted:
        if not await anyio.Path(path).is_file():
            raise UsageError(f"input {uri}: no such file {path}")
        digest, size = await store.put(path)
        files.append(InputFile(uri, digest, path.name, size, role))
    return files
