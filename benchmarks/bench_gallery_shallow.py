"""Benchmark: local-gallery ``replicationMode`` Shallow vs Full, 4 regions, same image, same run.

Full writes and verifies a copy per region; Shallow (AIB 2025-10-01) copies to the primary region only and records
the other three as references to it. The image is the ``compact`` shape of ``bench_gallery_replication`` (1 GiB
virtual, 300 MiB of data). Printed: wall and CPU seconds (median), disk bytes written, and the ratio Shallow/Full
(expected about 1/4 of the writes; the time ratio depends on how much of Full's cost the four copies share).

Run: ``.venv/bin/python benchmarks/bench_gallery_shallow.py [--dir DIR] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aib_provider_local_gallery.distributors import LocalSharedImageDistributor
from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef
from aib_provider_local_gallery.manifest import DefinitionRecord
from aib_provider_local_gallery.settings import GallerySettings
from aib_provider_local_gallery.store import GalleryStore
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.models.specs import SharedImageDistributor
from aib_sdk.options import BuildOptions
from aib_sdk.testing.fakes import make_run_context
from bench_gallery_replication import DEF_ID, GIB, MIB, REGIONS, cpu_seconds, make_image, sha256_of


def publish(artifact: Artifact, work: Path, mode: str, index: int) -> tuple[float, float, int]:
    """(wall s, cpu s, bytes allocated by the version's files) of one publish in ``mode``."""
    root = work / "gallery"
    config = Config({"local-gallery": {"root": str(root)}}, {"HOME": str(work), "PATH": os.environ.get("PATH", "")})
    store = GalleryStore(GallerySettings.from_config(config))
    if not store.gallery_exists(GalleryRef("bench", "bench")):
        store.create_gallery(GalleryRef("bench", "bench"))
        store.create_definition(
            DefinitionRecord(
                id=DEF_ID,
                name="img",
                gallery="bench",
                resource_group="bench",
                location="local",
                publisher="bench",
                offer="bench",
                sku="bench",
            )
        )
    version = f"1.0.{index}"
    spec = SharedImageDistributor.model_validate(
        {
            "type": "SharedImage",
            "runOutputName": "bench",
            "galleryImageId": f"{DEF_ID}/versions/{version}",
            "targetRegions": [{"name": r} for r in REGIONS],
            "replicationMode": mode,
        }
    )
    ctx = make_run_context(work / "ctx", config=config, options=BuildOptions(config=config))

    async def run() -> tuple[float, float]:
        cpu = cpu_seconds()
        start = time.perf_counter()
        await LocalSharedImageDistributor().publish(artifact, spec, ctx)
        return time.perf_counter() - start, cpu_seconds() - cpu

    wall, cpu = anyio.run(run)
    manifest = store.get_image(GalleryImageRef("bench", "bench", "img", version))
    assert manifest.replication_mode == mode and len(manifest.regions) == len(REGIONS)
    allocated = sum(Path(p).stat().st_blocks * 512 for p in {r.path for r in manifest.regions})
    store.delete(GalleryImageRef("bench", "bench", "img", version))
    return wall, cpu, allocated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    work = Path(tempfile.mkdtemp(prefix="bench-shallow-", dir=args.dir))
    try:
        image = make_image(work, "compact")
        artifact = Artifact(path=image, format="qcow2", virtual_size=GIB, sha256=sha256_of(image))
        samples: dict[str, list[tuple[float, float, int]]] = {"Full": [], "Shallow": []}
        for i in range(args.repeat):
            for n, mode in enumerate(("Full", "Shallow")):
                samples[mode].append(publish(artifact, work, mode, 2 * i + n))
        med = {m: [statistics.median(s[k] for s in v) for k in range(3)] for m, v in samples.items()}
        print(f"4 regions, {image.stat().st_blocks * 512 / MIB:.0f} MiB image; median of {args.repeat}")
        for mode, (wall, cpu, size) in med.items():
            print(f"  {mode:<8} wall {wall:6.2f} s   cpu {cpu:6.2f} s   stored {size / MIB:7.0f} MiB")
        full, shallow = med["Full"], med["Shallow"]
        print(
            f"  Shallow/Full: wall {shallow[0] / full[0]:.2f}   cpu {shallow[1] / full[1]:.2f}   "
            f"stored {shallow[2] / full[2]:.2f} (expected ~0.25)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
