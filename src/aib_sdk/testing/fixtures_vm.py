"""VM fixtures: the tiny test guest source and helpers to inspect built disks.

- ``tiny_guest_source`` — the template ``source`` spec of the tiny test guest (a dict);
- ``tiny_guest_cache`` — the cache directory the tiny guest is built into (``AIB_CACHE``, or ``~/.cache/aib``),
  shared across tests and runs so it is built once;
- :func:`read_ext4_file` — read a file from an ext4 filesystem inside a qcow2/raw disk with ``debugfs``.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from aib_sdk.config import Config
from aib_sdk.testing.tiny_guest import SPEC

__all__ = ["read_ext4_file", "tiny_guest_cache", "tiny_guest_source"]


@pytest.fixture
def tiny_guest_source() -> dict[str, str]:
    """``{"type": "PlatformImage", "publisher": "aib-sdk", "offer": "tiny-test-guest", …}``."""
    return dict(SPEC)


@pytest.fixture(scope="session")
def tiny_guest_cache() -> Path:
    """Where the tiny guest is cached: the configured ``AIB_CACHE`` (built once, reused by every test)."""
    return Config({}, dict(os.environ)).cache


async def read_ext4_file(disk: Path, fmt: str, path: str, work: Path) -> bytes:
    """The content of ``path`` in the ext4 filesystem that fills ``disk`` (converted to raw in ``work`` first).

    Raises :class:`FileNotFoundError` when the filesystem has no such file.
    """
    raw = work / f"{disk.name}.raw"
    if fmt != "raw":
        await anyio.run_process(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(disk), str(raw)])
    else:
        raw = disk
    out = anyio.Path(work / "debugfs.out")
    await out.unlink(missing_ok=True)
    result = await anyio.run_process(["debugfs", "-R", f"dump {path} {out}", str(raw)], check=False)
    if not await out.exists():
        raise FileNotFoundError(f"{path} not found in {disk.name}: {result.stderr.decode(errors='replace')}")
    return await out.read_bytes()
