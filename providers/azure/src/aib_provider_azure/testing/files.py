"""Small disk files for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

MIB = 1024 * 1024


def write_sparse(path: Path, size: int, data: dict[int, bytes]) -> Path:
    """A sparse file of ``size`` bytes holding ``data`` at the given offsets (holes elsewhere)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, chunk in data.items():
            f.seek(offset)
            f.write(chunk)
    return path
