"""Benchmark: a cold build of the Debian 12 base vs. the same steps by hand, side by side in one run.

- ``by hand``: ``debootstrap --variant=minbase --merged-usr --include=<the same package list>`` from the same
  mirror into an empty directory with an empty package cache, then ``mkfs.ext4 -d`` of the tree into a raw disk
  of the same size and ``qemu-img convert -c`` of it to qcow2 (zstd);
- ``aib``: ``DebianPlatformSource.resolve`` with an empty cache (debootstrap, configuration, GRUB, the disk,
  zstd qcow2, the digest).

Each side downloads its packages afresh. Printed: both times and the ratio aib/by hand (goal ≤ 1.1).
Needs root and the Debian build tools, like the base image itself.
Usage: ``python benchmarks/bench_debian_bootstrap.py [--keep CACHE_DIR]`` (``--keep``: the aib side builds into
that ``AIB_CACHE`` and the image stays there, e.g. for the boot benchmark).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

from aib_provider_qemu.debian import DebianPlatformSource, mirror, rootfs
from aib_provider_qemu.debian.source import DISK_SIZE
from aib_sdk.config import Config
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.testing.fakes import make_run_context

DEBIAN = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}
GOAL = 1.1
DEBOOTSTRAP = ("debootstrap", "--variant=minbase", "--merged-usr")
QEMU_IMG = ("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o", "compression_type=zstd")
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def by_hand(work: Path, source_mirror: str) -> float:
    """Seconds for debootstrap + mkfs.ext4 -d + qemu-img convert, done directly (sync)."""
    tree, debs, raw = work / "root", work / "debs", work / "disk.raw"
    debs.mkdir(parents=True)
    started = time.monotonic()
    include = f"--include={','.join(rootfs.PACKAGES)}"
    subprocess.run(
        [*DEBOOTSTRAP, include, f"--cache-dir={debs}", rootfs.SUITE, str(tree), source_mirror],
        check=True,
        env=ENV,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw), f"{DISK_SIZE // 1024}k"], check=True, env=ENV)
    subprocess.run(
        [*QEMU_IMG, str(raw), str(work / "disk.qcow2")],
        check=True,
    )
    seconds = time.monotonic() - started
    subprocess.run(["rm", "-rf", str(tree)], check=False)
    return seconds


async def with_aib(work: Path, cache: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_")}
    config = Config({}, {**env, "AIB_HOME": str(work / "home"), "AIB_CACHE": str(cache)})
    ctx = make_run_context(work, config=config)
    started = time.monotonic()
    await DebianPlatformSource().resolve(PlatformImageSource.model_validate(DEBIAN), ctx)
    return time.monotonic() - started


async def main_async(keep: Path | None) -> None:
    source_mirror = await mirror.find_mirror(rootfs.SUITE)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; mirror {source_mirror}")
    with tempfile.TemporaryDirectory(prefix="bench-debian-bootstrap-") as tmp:
        hand = await anyio.to_thread.run_sync(by_hand, Path(tmp) / "hand", source_mirror)
        print(f"  by hand (debootstrap + mkfs.ext4 -d + qemu-img): {hand:6.1f} s")
        aib = await with_aib(Path(tmp) / "aib", keep or Path(tmp) / "aib" / "cache")
        print(f"  aib (DebianPlatformSource, empty cache):          {aib:6.1f} s")
    print(f"  aib/by hand = {aib / hand:.2f} (goal ≤ {GOAL})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keep", type=Path, help="AIB_CACHE for the aib side, kept afterwards (must hold no image)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (debootstrap), like building the Debian base image")
    if args.keep is not None and any((args.keep / "debian").glob("*/disk.qcow2")):
        raise SystemExit(f"{args.keep} already holds a Debian image: the aib side would not be cold")
    anyio.run(main_async, args.keep)


if __name__ == "__main__":
    main()
