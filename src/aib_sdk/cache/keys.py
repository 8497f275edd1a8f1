"""Content-addressed layer keys.

A layer's key is the sha256 of a canonical JSON document (sorted keys, no whitespace) holding its parent's key
and what the step was: its spec and the digest of every input it fetched. The chain starts at a *root* key that
holds the source (exact version, disk digest, boot files) and every build-host setting that changes what the
disk holds. Two builds share a layer exactly when everything that could make the disks differ is equal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

KEY_VERSION = 1
"""Bumped whenever what a key covers changes, so older layers stop matching."""


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no insignificant whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def spec_json(spec: BaseModel) -> dict[str, Any]:
    """A step's spec as the template spells it (camelCase), defaults included so a default change counts."""
    data: dict[str, Any] = spec.model_dump(mode="json", by_alias=True)
    return data


@dataclass(frozen=True)
class Input:
    """One input a step fetched: the URI as written and the sha256 of the bytes it delivered."""

    uri: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"uri": self.uri, "sha256": self.sha256}


def root_key(*, source: Mapping[str, Any], host: Mapping[str, Any]) -> str:
    """The key every chain of a (source, build host settings) pair starts from."""
    return digest({"v": KEY_VERSION, "kind": "root", "source": dict(source), "host": dict(host)})


def step_key(parent: str, *, type_name: str, spec: Mapping[str, Any], inputs: Sequence[Input]) -> str:
    """The key of the disk state after one step run on the disk state ``parent``."""
    return digest(
        {
            "v": KEY_VERSION,
            "kind": "step",
            "parent": parent,
            "type": type_name,
            "spec": dict(spec),
            "inputs": [i.to_json() for i in inputs],
        }
    )
