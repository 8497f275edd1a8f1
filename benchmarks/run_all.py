"""Run every benchmark in this folder, one after another, each in its own interpreter.

Each benchmark measures its baseline in the same run and prints a ratio, so results hold on a noisy machine.
``python benchmarks/run_all.py [NAME ...]`` runs the named ones only (e.g. ``orchestration s3_upload``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or p.stem.removeprefix("bench_") in wanted)
    failures = 0
    for script in scripts:
        print(f"=== {script.stem} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)])
        print(f"=== {script.stem}: exit {code}, {time.perf_counter() - started:.1f} s ===\n", flush=True)
        failures += code != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
