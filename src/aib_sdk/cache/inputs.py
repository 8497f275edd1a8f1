"""What a step fetches, known before it runs, and a fetcher that hands the step exactly those bytes.

A step's key covers the bytes of its inputs, so they are fetched *before* the cache is asked (a script whose
bytes changed behind an unchanged ``scriptUri`` is a different step). While the step runs, :class:`PinnedFetcher`
serves the same files, so the layer stored under the key holds what the key says. A step that fetches anything
else cannot be keyed in advance: its layer (and every later one) is not stored.

Inputs are found in a spec by name: every string field whose camelCase name ends in ``Uri`` (``scriptUri``,
``sourceUri`` …), with the spec's ``sha256Checksum`` when it has one. A customizer may instead give a classmethod
``cache_inputs(spec) -> list[tuple[str, str | None]]`` (URI, expected sha256), or set ``cacheable = False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aib_sdk import disks
from aib_sdk.context import Fetcher

from .keys import Input, spec_json


def declared_inputs(runner: type[Any], spec: BaseModel) -> list[tuple[str, str | None]]:
    """The (URI, sha256) pairs ``spec`` will fetch."""
    custom = getattr(runner, "cache_inputs", None)
    if callable(custom):
        return list(custom(spec))
    data = spec_json(spec)
    checksum = data.get("sha256Checksum")
    sha = checksum if isinstance(checksum, str) and checksum else None
    return [
        (value, sha)
        for name, value in sorted(data.items())
        if name.lower().endswith("uri") and isinstance(value, str) and value
    ]


async def content_sha256(path: Path) -> str:
    """The sha256 of a fetched file (the fetcher stores content under ``<sha256>/<name>``; else hash it)."""
    parent = path.parent.name
    if len(parent) == 64 and all(c in "0123456789abcdef" for c in parent):
        return parent
    return await disks.sha256_file(path)


async def prefetch(
    fetcher: Fetcher, runner: type[Any], spec: BaseModel, label: str
) -> tuple[list[Input], dict[str, Path]]:
    """Fetch every declared input of a step; return their digests and the local files to pin."""
    inputs: list[Input] = []
    pins: dict[str, Path] = {}
    for uri, sha in declared_inputs(runner, spec):
        path = await fetcher.fetch(uri, sha, label=label)
        inputs.append(Input(uri, await content_sha256(path)))
        pins[uri] = path
    return inputs, pins


class PinnedFetcher:
    """A :class:`~aib_sdk.context.Fetcher` serving pinned URIs from their prefetched files; records anything else."""

    def __init__(self, inner: Fetcher, pins: Mapping[str, Path]) -> None:
        self.inner = inner
        self.pins = dict(pins)
        self.unpinned: list[str] = []

    async def fetch(self, uri: str, sha256: str | None = None, *, label: str | None = None) -> Path:
        pinned = self.pins.get(uri)
        if pinned is not None:
            return pinned
        self.unpinned.append(uri)
        return await self.inner.fetch(uri, sha256, label=label)
