"""Benchmark: the Debian 12 base's boot to ready, with the build-boot agent vs. cloud-init, in one run.

Both sides boot the same cached base disk (``~/.cache/aib``, built first if missing) in the QEMU build host with
2 vCPUs and a NoCloud seed, and time ``QemuBuildHost.start`` from the call until the first SSH login works:

- ``agent``: the seed carries aib-sdk's marker, so the image's agent provisions the build user and host keys,
  cloud-init skips, and the agent prints the ready line once sshd runs (what every build does now);
- ``cloud-init``: the same seed without the marker (the image's real first boot): cloud-init provisions, and
  readiness is the first SSH login (what builds did before the agent).

Inside each guest ``systemd-analyze`` splits the time (kernel, initrd, userspace) and names the slowest units.
Printed: both times and the ratio agent/cloud-init, next to the issue's goal (≤ 50 s).
Usage: ``python benchmarks/bench_debian_boot.py [--rounds 1] [--vcpus 2]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from aib_provider_qemu import seed
from aib_provider_qemu.debian import DebianPlatformSource
from aib_provider_qemu.host import QemuBuildHost
from aib_sdk.artifacts import DiskImage
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.models.specs import PlatformImageSource
from aib_sdk.protocols import VmRequest
from aib_sdk.testing.fakes import make_run_context

DEBIAN = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}
GOAL = 50.0
VM_SIZES = {1: "Standard_D1_v2", 2: "Standard_D2s_v3", 4: "Standard_D4s_v3"}


def _ctx(work: Path) -> RunContext:
    env = {k: v for k, v in os.environ.items() if k != "AIB_HOME"}
    return make_run_context(work, config=Config({}, {**env, "AIB_HOME": str(work / "home")}))


async def boot(image: DiskImage, work: Path, vm_size: str, *, agent: bool) -> tuple[float, str]:
    """Seconds from ``start`` to a working SSH login, and systemd-analyze's summary from inside the guest."""
    ctx = _ctx(work)
    if not agent:
        image = dataclasses.replace(image, attributes={k: v for k, v in image.attributes.items() if k != "ready_line"})
    marker = seed.AGENT_MARKER
    seed.AGENT_MARKER = marker if agent else "no-aib-marker"
    try:
        started = time.monotonic()
        async with QemuBuildHost().start(image, VmRequest(vm_size=vm_size), ctx) as machine:
            ready = time.monotonic() - started
            result = await machine.communicator.run(
                "systemd-analyze 2>/dev/null | head -1; systemd-analyze blame 2>/dev/null | head -5", timeout=120
            )
            await machine.shutdown()
    finally:
        seed.AGENT_MARKER = marker
    return ready, result.stdout.strip()


async def main_async(rounds: int, vcpus: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-debian-boot-") as tmp:
        work = Path(tmp)
        spec = PlatformImageSource.model_validate(DEBIAN)
        image = await DebianPlatformSource().resolve(spec, _ctx(work / "resolve"))
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {vcpus} vCPUs; {image.path}")
        times: dict[str, list[float]] = {"agent": [], "cloud-init": []}
        for index in range(rounds):
            for name in times:
                seconds, analyze = await boot(image, work / f"{name}-{index}", VM_SIZES[vcpus], agent=name == "agent")
                times[name].append(seconds)
                print(f"  round {index + 1} {name:10s}: ready in {seconds:6.1f} s")
                for line in analyze.splitlines():
                    print(f"      {line.strip()}")
        a, c = statistics.median(times["agent"]), statistics.median(times["cloud-init"])
        print(f"  median: agent {a:.1f} s, cloud-init {c:.1f} s; agent/cloud-init = {a / c:.2f} (goal ≤ {GOAL:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--vcpus", type=int, choices=sorted(VM_SIZES), default=2)
    args = parser.parse_args()
    anyio.run(main_async, args.rounds, args.vcpus)


if __name__ == "__main__":
    main()
