"""``make demo``: build ``examples/debian-demo.json`` with the SDK, showing live progress, then the run outputs.

The template is a real AIB template: a Debian 12 ``PlatformImage`` (bootstrapped locally from this machine's apt
mirror, cached after the first run), Shell/File customizers, an in-VM validation, and two targets built in
parallel: a ``SharedImage`` version in the local gallery replicated to two regions, and a zstd-compressed qcow2
under ``out/``. The gallery and its image definition are created first through the local gallery's API (as
``az sig create`` would be in Azure); without the local-gallery provider the demo writes the qcow2 only.

Usage: ``python examples/demo.py [--verbose]`` (``--verbose`` also shows the guest's serial console).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import (
    Event,
    LogLine,
    PhaseChanged,
    Progress,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    TargetStatus,
    Warning,
)
from aib_sdk.options import BuildOptions
from aib_sdk.routing import parse_arm_id

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "debian-demo.json"
OUT = HERE.parent / "out"
QUIET_PREFIXES = ("I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking", "I: Configuring")


def _load_template() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    return data


def _create_gallery(config: Config, template: dict[str, Any]) -> list[str]:
    """Create the local galleries and image definitions the template's SharedImage targets need (sync)."""
    from aib_provider_local_gallery.ids import GalleryImageRef, GalleryRef
    from aib_provider_local_gallery.manifest import DefinitionRecord
    from aib_provider_local_gallery.settings import GallerySettings
    from aib_provider_local_gallery.store import GalleryStore

    store = GalleryStore(GallerySettings.from_config(config))
    source = template["properties"]["source"]
    created = []
    for target in template["properties"]["distribute"]:
        arm = parse_arm_id(target.get("galleryImageId", "")) if target["type"] == "SharedImage" else None
        if arm is None:
            continue
        gallery, definition = arm.get("galleries"), arm.get("images")
        assert gallery and definition
        store.create_gallery(GalleryRef(arm.resource_group, gallery), template.get("location"), exist_ok=True)
        ref = GalleryImageRef(arm.resource_group, gallery, definition)
        record = DefinitionRecord(
            id=ref.definition_id,
            name=definition,
            gallery=gallery,
            resource_group=arm.resource_group,
            location=template.get("location", "westeurope"),
            publisher="aib-sdk-demo",
            offer=source["offer"],
            sku=source["sku"],
            os_type="Linux",
            hyper_v_generation="V1",
        )
        store.create_definition(record, exist_ok=True)
        created.append(ref.definition_id)
    return created


async def prepare(config: Config) -> dict[str, Any]:
    """The template to build: as written when the local gallery is installed, else without its SharedImage."""
    template = _load_template()
    try:
        created = await anyio.to_thread.run_sync(_create_gallery, config, template)
    except ImportError:
        props = template["properties"]
        props["distribute"] = [d for d in props["distribute"] if d["type"] != "SharedImage"]
        print("local-gallery provider not installed: building the qcow2 output only")
    else:
        for definition in created:
            print(f"gallery image definition ready: {definition}")
    return template


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


class Display:
    """Prints one line per interesting event; progress at most every 10 % per transfer."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.started = time.monotonic()
        self.shown: dict[tuple[str, str, str | None], int] = {}
        self.quiet = 0

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {text}", flush=True)

    def show(self, ev: Event) -> None:
        if isinstance(ev, RunStarted):
            self.line(f"run {ev.run_id} of {ev.template_name} (staging {ev.staging_directory})")
        elif isinstance(ev, PhaseChanged):
            self.line(f"== {ev.run_state} / {ev.run_sub_state}")
        elif isinstance(ev, StepStarted):
            self.line(f"-> {ev.phase} step {ev.index + 1} {ev.name} ({ev.type})")
        elif isinstance(ev, StepFinished):
            status = "ok" if ev.ok else f"FAILED: {ev.error}"
            self.line(f"<- {ev.name}: {status} in {ev.duration:.1f}s")
        elif isinstance(ev, LogLine):
            if ev.stream == "serial" and not self.verbose:
                return
            if ev.line.startswith(QUIET_PREFIXES) and not self.verbose:
                self.quiet += 1
                if self.quiet % 100 == 0:
                    self.line(f"   [{ev.source}] … {self.quiet} package operations")
                return
            self.line(f"   [{ev.source}] {ev.line}")
        elif isinstance(ev, Progress) and ev.task == "debian-bootstrap":
            self.line(f"   [debian-bootstrap] stage: {ev.label}")
        elif isinstance(ev, Progress):
            key = (ev.task, ev.label, ev.region or ev.target)
            percent = int(ev.percent or 0) // 25 * 25
            if ev.total and self.shown.get(key, -1) < percent:
                self.shown[key] = percent
                where = f" {ev.target or ''}{'/' + ev.region if ev.region else ''}".rstrip()
                label = ev.label.rsplit("/", 1)[-1]
                self.line(f"   {ev.task}{where} {label}: {percent}% of {_size(ev.total)}")
        elif isinstance(ev, TargetStatus):
            where = f"{ev.run_output_name}" + (f" region {ev.region}" if ev.region else "")
            self.line(f"   target {where}: {ev.state} {ev.message}".rstrip())
        elif isinstance(ev, Warning):
            self.line(f"   warning: {ev.message}")
        elif isinstance(ev, RunFinished):
            self.line(f"== finished: {ev.run_state} {ev.message}".rstrip())

    async def follow(self, events: MemoryObjectReceiveStream[Event]) -> None:
        async with events:
            async for ev in events:
                self.show(ev)


async def main(verbose: bool = False) -> int:
    config = Config.load()
    await anyio.Path(OUT).mkdir(parents=True, exist_ok=True)
    template = await prepare(config)
    options = BuildOptions(
        params={"outputDir": str(OUT)},
        config=config,
        base_directory=HERE,
        template_name=template.get("name", "debian-demo"),
    )
    builder = Builder(template, options=options)
    display = Display(verbose)
    async with anyio.create_task_group() as tg:
        tg.start_soon(display.follow, builder.events())
        result = await builder.run()
    print(json.dumps(result.to_json(), indent=2))
    if result.run_state != "Succeeded":
        print(f"build {result.run_state}: {result.last_run_status.message}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(anyio.run(main, "--verbose" in sys.argv[1:]))
