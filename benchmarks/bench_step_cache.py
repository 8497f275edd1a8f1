"""Step-cache benchmark: change only the last step of a template whose first step is expensive; rebuild.

The template: step 1 stands in for a long install (``sleep 60`` plus a file, ``--expensive SECONDS``), then two
cheap steps, then a qcow2 ``DiskFile`` output. Measured in one run, with one fresh layer store:

- **no cache**: ``cache=False`` — what every build cost before the cache (the baseline);
- **cold**: cache on, empty store — the same work plus a layer after each step;
- **last step changed**: only step 3's command differs — steps 1-2 come from layers, and the build resumes the RAM
  state kept with layer 2 instead of booting it (``[cache] ram_state``, the default);
- **unchanged**: the same template again — every step from layers (the last one's RAM state resumed);
- **last step changed, booted**: step 3 changed again, with ``ram_state=False`` — layer 2 is booted (the step
  cache without RAM state).

Ratios are against the **cold** build (goal: last-step rebuild ≤ 0.2x); each build's time is split into boot,
steps, layers, capture and distribution from its run.json, so the report says where the rest goes.
The default guest is the tiny test guest (``--guest tiny``, its boot is seconds under TCG); ``--guest debian``
uses the debootstrapped Debian 12 base (a 20-90 s boot under TCG).

Usage: ``python benchmarks/bench_step_cache.py [--guest tiny|debian] [--expensive 60] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import Event, LogLine, StepFinished
from aib_sdk.options import BuildOptions
from aib_sdk.testing.tiny_guest import SPEC

DEBIAN = {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12", "sku": "12", "version": "latest"}


def template(source: dict[str, str], expensive: float, last: str, out: Path) -> dict[str, Any]:
    def tee(path: str, text: str) -> str:
        return f"echo {text} | sudo tee {path} >/dev/null"

    return {
        "source": source,
        "customize": [
            {"type": "Shell", "name": "expensive", "inline": [f"sleep {expensive:g}", tee("/opt-expensive", "done")]},
            {"type": "Shell", "name": "cheap", "inline": [tee("/opt-cheap", "cheap")]},
            {"type": "Shell", "name": "last", "inline": [tee("/opt-last", last)]},
        ],
        "distribute": [{"type": "DiskFile", "runOutputName": "disk", "uri": out.as_uri(), "format": "qcow2"}],
    }


async def build(env: dict[str, str], doc: dict[str, Any], *, cache: bool, ram_state: bool = True) -> dict[str, Any]:
    events: list[Event] = []
    options = BuildOptions(
        config=Config({}, env), build_host="qemu", on_event=events.append, timeout=3600, cache=cache,
        ram_state=ram_state, template_name="bench-step-cache",
    )  # fmt: skip
    builder = Builder(doc, options=options)
    started = time.perf_counter()
    result = await builder.run()
    elapsed = time.perf_counter() - started
    if result.run_state != "Succeeded":
        raise SystemExit(f"build failed: {result.last_run_status.message}")
    assert builder.staging is not None
    record = json.loads(builder.staging.record_file.read_text())
    steps = [e for e in events if isinstance(e, StepFinished) and e.phase == "customize"]
    layer_seconds = sum(
        float(line.line.rsplit(" in ", 1)[1].rstrip("s)"))
        for line in events
        if isinstance(line, LogLine) and line.source == "cache" and line.line.startswith("stored layer")
    )
    phases = record["details"]["phases"]
    step_seconds = sum(e.duration for e in steps)
    return {
        "seconds": round(elapsed, 2),
        "cached": [e.cached for e in steps],
        "resumed": any(e.ram_state for e in steps),
        "boot": round(phases.get("Building", 0.0), 2),
        "steps": round(step_seconds, 2),
        "layers": round(layer_seconds, 2),
        "customizeOther": round(phases.get("Customizing", 0.0) - step_seconds - layer_seconds, 2),
        "distribute": round(phases.get("Distributing", 0.0), 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    source = dict(SPEC) if args.guest == "tiny" else DEBIAN
    with tempfile.TemporaryDirectory(prefix="aib-bench-cache-") as tmp:
        root = Path(tmp)
        env = dict(os.environ, AIB_HOME=str(root / "home"), AIB_CACHE_DIR=str(root / "layers"))
        out = root / "out.qcow2"
        runs: dict[str, dict[str, Any]] = {}
        runs["no cache"] = await build(env, template(source, args.expensive, "v1", out), cache=False)
        runs["cold"] = await build(env, template(source, args.expensive, "v1", out), cache=True)
        runs["last step changed"] = await build(env, template(source, args.expensive, "v2", out), cache=True)
        runs["unchanged"] = await build(env, template(source, args.expensive, "v2", out), cache=True)
        runs["last step changed, booted"] = await build(
            env, template(source, args.expensive, "v3", out), cache=True, ram_state=False
        )
    cold = runs["cold"]["seconds"]
    report = {
        "guest": args.guest,
        "expensiveSeconds": args.expensive,
        "runs": runs,
        "ratios": {
            "lastStepChanged/cold": round(runs["last step changed"]["seconds"] / cold, 3),
            "unchanged/cold": round(runs["unchanged"]["seconds"] / cold, 3),
            "lastStepChangedBooted/cold": round(runs["last step changed, booted"]["seconds"] / cold, 3),
            "cold/noCache": round(cold / runs["no cache"]["seconds"], 3),
        },
        "goal": "lastStepChanged/cold <= 0.2",
    }
    return report


def show(report: dict[str, Any]) -> None:
    print(f"guest {report['guest']}, step 1 = sleep {report['expensiveSeconds']:g}s (stand-in for a long install)")
    print(f"  {'run':<26} {'total':>7} {'boot':>6} {'steps':>6} {'layers':>6} {'other':>6} {'distr':>6}  cached")
    for name, run in report["runs"].items():
        cached = "".join("C" if c else "r" for c in run["cached"]) + (" (RAM state resumed)" if run["resumed"] else "")
        print(
            f"  {name:<26} {run['seconds']:>6.1f}s {run['boot']:>5.1f}s {run['steps']:>5.1f}s "
            f"{run['layers']:>5.1f}s {run['customizeOther']:>5.1f}s {run['distribute']:>5.1f}s  {cached}"
        )
    for name, value in report["ratios"].items():
        print(f"  {name}: {value:.3f}x")
    reached = report["ratios"]["lastStepChanged/cold"] <= 0.2
    print(f"  goal {report['goal']}: {'met' if reached else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guest", choices=("tiny", "debian"), default="tiny")
    parser.add_argument("--expensive", type=float, default=60.0, help="seconds the first step sleeps")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = anyio.run(main, args)
    print(json.dumps(result, indent=2)) if args.json else show(result)
