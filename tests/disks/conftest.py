"""Disk test fixtures: a real RunContext whose events are recorded in a list, and sparse raw disks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aib_sdk.context import RunContext
from aib_sdk.events import Event
from aib_sdk.testing.fakes import make_run_context

MIB = 1024 * 1024


def make_raw(path: Path, size: int, data_chunks: dict[int, bytes]) -> Path:
    """A sparse raw disk of ``size`` bytes with ``data`` written at the given offsets."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in data_chunks.items():
            f.seek(offset)
            f.write(data)
    return path


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def run_ctx(tmp_path: Path, events: list[Event]) -> RunContext:
    return make_run_context(tmp_path / "ctx", emit=events.append, template_name="disks")


@pytest.fixture
def sample_raw(tmp_path: Path) -> tuple[Path, bytes]:
    """A 16 MiB + 4 KiB sparse raw disk (not MiB-aligned) with 1 MiB of random data at 2 MiB and a tail block."""
    payload = os.urandom(MIB)
    path = make_raw(tmp_path / "disk.raw", 16 * MIB + 4096, {2 * MIB: payload, 16 * MIB: b"tail" * 1024})
    return path, payload
