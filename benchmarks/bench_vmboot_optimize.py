"""Benchmark: what ``optimize.vmBoot`` saves on the next boot of the image, in one run.

A build with ``optimize.vmBoot`` boots the captured image once in its ``Optimizing`` sub-state (the image's first
boot: the baseline) and keeps the disk it leaves; the validation VM then boots that optimized disk (the next boot).
Both are boot-to-ready times of the same image shape on the same host, recorded by the build in ``run.json``
(``details.optimization``). Printed: both medians and the ratio next/first (below 1 = time saved).

``--guest tiny`` (default, seconds per round) or ``--guest debian`` (Debian 12 with cloud-init; ~90 s per boot
under TCG). Usage: ``python benchmarks/bench_vmboot_optimize.py [--guest tiny|debian] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import anyio

from aib_provider_qemu import hooks as qemu_hooks
from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.tiny_guest import SPEC

DEBIAN = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}


async def one_round(work: Path, source: dict[str, str]) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIB_QEMU_")}
    env["AIB_HOME"] = str(work / "home")
    options = BuildOptions(
        config=Config({}, env),
        plugins=PluginManager(entry_points=False, plugins=[qemu_hooks]),
        build_host="qemu",
        timeout=3600,
    )
    template = {
        "source": source,
        "customize": [{"type": "Shell", "name": "touch", "inline": ["sudo touch /etc/aib-bench"]}],
        "optimize": {"vmBoot": {"state": "Enabled"}},
        "validate": {"inVMValidations": [{"type": "Shell", "name": "check", "inline": ["test -f /etc/aib-bench"]}]},
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": (work / "out.qcow2").as_uri()}],
    }
    result = await Builder(template, options=options).run()
    if result.run_state != "Succeeded":
        raise SystemExit(f"build failed: {result.last_run_status.message}")
    record = json.loads((result.staging_directory / "runs" / result.run_id / "run.json").read_text())
    timing: dict[str, float] = record["details"]["optimization"]
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guest", choices=["tiny", "debian"], default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    source = dict(SPEC) if args.guest == "tiny" else DEBIAN
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; guest {args.guest}")
    first, following = [], []
    for index in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="bench-vmboot-"))
        try:
            timing = anyio.run(one_round, work, source)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        first.append(timing["firstBootSeconds"])
        following.append(timing["nextBootSeconds"])
        print(f"  round {index + 1}: first boot {first[-1]:6.2f} s   next boot {following[-1]:6.2f} s")
    f, n = statistics.median(first), statistics.median(following)
    print(f"  median: first boot {f:.2f} s, next boot (optimized image) {n:.2f} s; next/first = {n / f:.2f}")


if __name__ == "__main__":
    main()
