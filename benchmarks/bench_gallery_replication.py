"""Benchmark: publish a 1 GiB sparse qcow2 holding 300 MiB of data to 4 local-gallery regions, verified.

Compared in the same run, on the same file system, from the page cache, against
  (a) four plain sparse copies made concurrently (``cp --sparse=always``), and
  (b) the same four copies followed by a sha256 re-read of each (four threads of Python's hashlib, which uses
      the CPU's SHA extensions; coreutils' ``sha256sum`` is several times slower here, so this is the harder
      baseline).
Goals: gallery <= 1.25x (a) and <= 0.3x (b). ``cp`` does not fsync, so the headline compares the gallery with
``fsync = false``; the gallery's default (``fsync = true``, copies flushed before the version is visible) is
printed too.

Two shapes of the same disk (1 GiB virtual, 300 MiB of data) are measured: ``compact`` — the qcow2 file as
``qemu-img convert`` writes a captured disk (about 300 MiB, few holes) — and ``holes`` — a qcow2 with
``preallocation=metadata``, a 1 GiB file of which 700 MiB are holes. Holes cost no writes, but a sha256 of the
file must still hash them as zeros (700 MiB more hashing per run than ``cp`` does).

Run: ``.venv/bin/python benchmarks/bench_gallery_replication.py [--dir DIR] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

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

GIB, MIB = 1 << 30, 1 << 20
REGIONS = ["local", "eastus", "westeurope", "southeastasia"]
DEF_ID = "/subscriptions/local/resourceGroups/bench/providers/Microsoft.Compute/galleries/bench/images/img"


def make_image(work: Path, shape: str) -> Path:
    raw, image = work / "src.raw", work / f"src-{shape}.qcow2"
    rng = random.Random(7)
    with open(raw, "wb") as f:
        f.truncate(GIB)
        for i in range(30):  # 30 x 10 MiB of data spread over the disk
            f.seek(i * (GIB // 30))
            f.write(rng.randbytes(10 * MIB))
    options = ["-o", "preallocation=metadata"] if shape == "holes" else []
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", *options, str(raw), str(image)], check=True)
    raw.unlink()
    return image


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


def run_parallel(commands: list[list[str]]) -> None:
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in commands]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"{p.args} failed")


def cpu_seconds() -> float:
    """CPU time used so far by this process (all threads) and its finished children."""
    return sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


Sample = tuple[float, float]  # wall seconds, CPU seconds


def baseline(image: Path, out: Path, *, verify: bool) -> Sample:
    out.mkdir()
    copies = [out / f"copy{i}.qcow2" for i in range(len(REGIONS))]
    cpu = cpu_seconds()
    start = time.perf_counter()
    run_parallel([["cp", "--sparse=always", str(image), str(c)] for c in copies])
    if verify:
        with concurrent.futures.ThreadPoolExecutor(len(copies)) as pool:
            list(pool.map(sha256_of, copies))
    elapsed = time.perf_counter() - start, cpu_seconds() - cpu
    shutil.rmtree(out)
    return elapsed


def gallery_run(image: Path, artifact: Artifact, work: Path, *, fsync: bool, index: int) -> Sample:
    root = work / "gallery"
    data = {"local-gallery": {"root": str(root), "fsync": str(fsync).lower()}}
    config = Config(data, {"HOME": str(work), "PATH": os.environ.get("PATH", "")})
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
    spec = SharedImageDistributor.model_validate(
        {
            "type": "SharedImage",
            "runOutputName": "bench",
            "galleryImageId": f"{DEF_ID}/versions/1.0.{index}",
            "targetRegions": [{"name": r} for r in REGIONS],
        }
    )
    ctx = make_run_context(work / "ctx", config=config, options=BuildOptions(config=config))

    async def publish() -> Sample:
        cpu = cpu_seconds()
        start = time.perf_counter()
        await LocalSharedImageDistributor().publish(artifact, spec, ctx)
        return time.perf_counter() - start, cpu_seconds() - cpu

    elapsed = anyio.run(publish)
    manifest = store.get_image(GalleryImageRef("bench", "bench", "img", f"1.0.{index}"))
    assert len(manifest.regions) == 4 and all(r.sha256 == artifact.sha256 for r in manifest.regions)
    for replica in manifest.regions:
        copy = Path(replica.path)
        assert copy.stat().st_blocks * 512 < image.stat().st_blocks * 512 + 8 * MIB, "copy is not sparse"
    store.delete(GalleryImageRef("bench", "bench", "img", f"1.0.{index}"))
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shape", choices=["compact", "holes"], action="append")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for shape in args.shape or ["compact", "holes"]:
        bench(shape, args.dir, args.repeat)


def bench(shape: str, directory: str | None, repeat: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-gallery-", dir=directory))
    try:
        image = make_image(work, shape)
        digest = sha256_of(image)  # warms the page cache for every contender
        info = os.stat(image)
        print(
            f"[{shape}] qcow2 file {info.st_size / MIB:.0f} MiB, {info.st_blocks * 512 / MIB:.0f} MiB allocated "
            f"(1 GiB virtual, 300 MiB data); 4 regions; median of {repeat}"
        )
        virtual = GIB
        artifact = Artifact(path=image, format="qcow2", virtual_size=virtual, sha256=digest)
        times: dict[str, list[Sample]] = {"a": [], "b": [], "gallery": [], "gallery_fsync": []}
        for i in range(repeat):
            times["a"].append(baseline(image, work / f"a{i}", verify=False))
            times["b"].append(baseline(image, work / f"b{i}", verify=True))
            times["gallery"].append(gallery_run(image, artifact, work, fsync=False, index=2 * i))
            times["gallery_fsync"].append(gallery_run(image, artifact, work, fsync=True, index=2 * i + 1))
        med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
        cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
        rows = [
            ("a", "(a) 4 x cp --sparse=always, concurrent"),
            ("b", "(b) 4 x cp, then 4 sha256 re-reads"),
            ("gallery", "gallery publish, 4 regions (fsync=false)"),
            ("gallery_fsync", "gallery publish, 4 regions (fsync=true)"),
        ]
        for key, label in rows:
            print(f"  {label:<44} wall {med[key]:6.2f} s   cpu {cpu[key]:6.2f} s")
        for name, m in (("wall", med), ("cpu", cpu)):
            print(
                f"  {name:>4}: gallery/(a) = {m['gallery'] / m['a']:.2f} (goal <= 1.25)   "
                f"gallery/(b) = {m['gallery'] / m['b']:.2f} (goal <= 0.30)   "
                f"with fsync: {m['gallery_fsync'] / m['a']:.2f} / {m['gallery_fsync'] / m['b']:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
