"""Fixtures of the local-gallery tests: a gallery root under tmp_path, real qcow2 artifacts, run contexts."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.store import GalleryStore
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def make_qcow2(path: Path, *, size_mib: int = 64, data_mib: int = 6, seed: int = 1, sparse: bool = True) -> Path:
    """A real qcow2 image (``qemu-img convert`` of a raw disk holding ``data_mib`` MiB of random data).

    ``sparse`` keeps it metadata-preallocated, so the qcow2 file itself has holes between its data clusters.
    """
    raw = path.with_suffix(".raw")
    rng = random.Random(seed)
    with open(raw, "wb") as f:
        f.truncate(size_mib << 20)
        for i in range(data_mib):
            f.seek(((i * size_mib) // max(data_mib, 1)) << 20)
            f.write(rng.randbytes(1 << 20))
    options = ["-o", "preallocation=metadata"] if sparse else []
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", *options, str(raw), str(path)], check=True)
    raw.unlink()
    return path


def artifact_of(path: Path, **kwargs: Any) -> Artifact:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True)
    virtual = json.loads(out.stdout)["virtual-size"]
    return Artifact(
        path=path, format="qcow2", virtual_size=virtual, sha256=kwargs.pop("sha256", sha256_of(path)), **kwargs
    )


@pytest.fixture(scope="session")
def small_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MiB qcow2 holding 6 MiB of data, sparse on disk (shared, never modified)."""
    return make_qcow2(tmp_path_factory.mktemp("images") / "small.qcow2")


@pytest.fixture(scope="session")
def big_qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 MiB qcow2 holding 24 MiB of data, sparse on disk: long enough to watch (or stop) replication."""
    return make_qcow2(tmp_path_factory.mktemp("images") / "big.qcow2", size_mib=128, data_mib=24)


@dataclass
class GalleryEnv:
    """A gallery rooted in tmp_path and everything a test needs to publish into it."""

    tmp_path: Path
    root: Path
    data: dict[str, Any]
    events: EventRecorder

    @property
    def config(self) -> Config:
        return Config(self.data, {"HOME": str(self.tmp_path), "PATH": os.environ.get("PATH", "")})

    @property
    def store(self) -> GalleryStore:
        return GalleryStore(GallerySettings.from_config(self.config))

    def ctx(self, *, run_id: str | None = None, **options: Any) -> RunContext:
        config = self.config
        return make_run_context(
            self.tmp_path,
            config=config,
            emit=self.events,
            run_id=run_id,
            options=BuildOptions(config=config, **options),
        )

    sha256_of = staticmethod(sha256_of)
    make_qcow2 = staticmethod(make_qcow2)
    artifact_of = staticmethod(artifact_of)

    def map_region(self, name: str, directory: Path) -> None:
        self.data["local-gallery"].setdefault("regions", {})[name] = str(directory)

    def files(self) -> list[Path]:
        """Every regular file under the gallery root and the mapped region directories."""
        roots = [self.root, *(Path(p) for p in self.data["local-gallery"].get("regions", {}).values())]
        return sorted(p for r in roots for p in r.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture
def gallery(tmp_path: Path) -> GalleryEnv:
    root = tmp_path / "gallery"
    data = {"local-gallery": {"root": str(root), "chunk_size": 256 << 10, "fsync": "false", "progress_interval": 0.005}}
    return GalleryEnv(tmp_path, root, data, EventRecorder())


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """Mount small tmpfs file systems (root only) to make a region run out of space mid-copy."""
    mounted: list[Path] = []

    def mount(name: str, size_kib: int) -> Path:
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(point)], check=True)
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def xfs_reflink(tmp_path: Path) -> Iterator[Path]:
    """An XFS file system with reflink on a loop device (``mkfs.xfs -m reflink=1``), mounted under tmp_path."""
    image, point = tmp_path / "xfs.img", tmp_path / "xfs"
    with open(image, "wb") as f:
        f.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    point.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)
