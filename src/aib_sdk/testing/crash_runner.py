"""``python -m aib_sdk.testing.crash_runner TEMPLATE.json [PLUGIN_MODULE ...]``: one build on the fake build host
(``AIB_FAKE_CAPTURE_BYTES`` sizes its captured disk) with real distributors from the named provider hook modules,
in a process of its own, so a test can ``kill -9`` it mid-phase. Configuration from ``AIB_HOME``/``AIB_CONFIG``;
``AIB_FAKE_ARM_TOKEN`` gives Azure a static bearer token (for the ARM test server).
Prints ``event <Type> <fields>`` lines on stderr as the run goes; exits 0 after any final state.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import anyio

from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.events import Event
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import fake_plugin


def _show(event: Event) -> None:
    print(f"event {type(event).__name__} {event!r}", file=sys.stderr, flush=True)


async def main(argv: list[str]) -> int:
    template = json.loads(Path(argv[0]).read_text())
    fakes = fake_plugin()
    fakes.world.capture_bytes = int(os.environ.get("AIB_FAKE_CAPTURE_BYTES", "0"))
    plugins = PluginManager(entry_points=False, plugins=[fakes, *(importlib.import_module(m) for m in argv[1:])])
    config = Config.load(None)
    options = BuildOptions(config=config, plugins=plugins, build_host="fake", on_event=_show)
    if os.environ.get("AIB_FAKE_ARM_TOKEN"):  # a static bearer token for the ARM test server
        from aib_provider_azure.credentials import StaticTokenCredential

        options.credential = StaticTokenCredential(os.environ["AIB_FAKE_ARM_TOKEN"])
    result = await Builder(template, options=options).run()
    print(f"result {result.run_state}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
