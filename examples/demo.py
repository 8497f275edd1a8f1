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
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from aib_sdk.builder import Builder
from aib_sdk.cli.build import report
from aib_sdk.cli.progress import make_display
from aib_sdk.config import Config
from aib_sdk.events import Event, LogLine
from aib_sdk.options import BuildOptions
from aib_sdk.routing import parse_arm_id

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "debian-demo.json"
OUT = HERE.parent / "out"


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
    template: dict[str, Any] = json.loads(await anyio.Path(TEMPLATE).read_text(encoding="utf-8"))
    try:
        created = await anyio.to_thread.run_sync(_create_gallery, config, template)
    except ImportError:
        props = template["properties"]
        props["distribute"] = [d for d in props["distribute"] if d["type"] != "SharedImage"]
        print("local-gallery provider not installed: building the qcow2 output only", file=sys.stderr)
    else:
        for definition in created:
            print(f"gallery image definition ready: {definition}", file=sys.stderr)
    return template


async def follow(events: MemoryObjectReceiveStream[Event], verbose: bool) -> None:
    """Show the run with ``aib build``'s own display (live on a terminal, one line per event otherwise)."""
    display = make_display(sys.stderr, "auto")
    assert display is not None
    with display:
        async with events:
            async for ev in events:
                if verbose or not (isinstance(ev, LogLine) and ev.stream == "serial"):
                    display(ev)


async def main(verbose: bool = False) -> int:
    config = Config.load()
    await anyio.Path(OUT).mkdir(parents=True, exist_ok=True)
    # The demo's own output of an earlier run: a file:// output never replaces a file its target did not write
    # (docs/security.md), and a run made before that rule left no record of it.
    await anyio.Path(OUT / "debian-demo.qcow2").unlink(missing_ok=True)
    template = await prepare(config)
    options = BuildOptions(
        params={"outputDir": str(OUT)},
        config=config,
        base_directory=HERE,
        template_name=template.get("name", "debian-demo"),
    )
    builder = Builder(template, options=options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(follow, builder.events(), verbose)
        result = await builder.run()
    return report(result, as_json=True)  # as ``aib build --json``: the result on stdout, a failure explained on stderr


if __name__ == "__main__":
    sys.exit(anyio.run(main, "--verbose" in sys.argv[1:]))
