"""Benchmark: split a guest's output that has no newline (the worst case) into lines, 64 KiB chunks.

Compared in the same run: (a) :class:`aib_sdk.communicators.lines.LineBuffer` (each character scanned once, at most
64 KiB held), (b) the former ``pending += chunk; pending.split("\\n")`` reader (re-scans the whole pending text per
chunk). Goal: (a) linear in the size (the 32 MiB/8 MiB time ratio near 4) and far below (b).

Run: ``.venv/bin/python benchmarks/bench_line_buffer.py``
"""

from __future__ import annotations

import time

from aib_sdk.communicators.lines import LineBuffer

CHUNK = "x" * 65536


def with_buffer(mib: int) -> float:
    start = time.perf_counter()
    buffer = LineBuffer()
    for _ in range(mib * 16):
        buffer.feed(CHUNK)
    buffer.flush()
    return time.perf_counter() - start


def with_split(mib: int) -> float:
    start = time.perf_counter()
    pending = ""
    for _ in range(mib * 16):
        pending += CHUNK
        *_lines, pending = pending.split("\n")
    return time.perf_counter() - start


def main() -> None:
    small, large = with_buffer(8), with_buffer(32)
    old_small, old_large = with_split(8), with_split(32)
    print(f"LineBuffer: 8 MiB {small * 1e3:.2f} ms, 32 MiB {large * 1e3:.2f} ms, ratio {large / small:.1f} (linear: 4)")
    old_ratio = old_large / old_small
    print(f"split():    8 MiB {old_small * 1e3:.0f} ms, 32 MiB {old_large * 1e3:.0f} ms, ratio {old_ratio:.1f}")
    print(f"32 MiB: LineBuffer takes {large / old_large:.5f}x the time of the former reader")


if __name__ == "__main__":
    main()
