"""Builder tests: a helper that runs a template on the fakes with an isolated AIB_HOME."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult
from aib_sdk.testing.recorder import EventRecorder

RunBuild = Callable[..., Awaitable[tuple[BuildResult, Builder]]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_builder(aib_plugins: PluginManager, aib_events: EventRecorder, aib_home: Config) -> Callable[..., Builder]:
    def make(template: Any, **options: Any) -> Builder:
        options.setdefault("build_host", "fake")
        opts = BuildOptions(config=aib_home, plugins=aib_plugins, on_event=aib_events, **options)
        return Builder(template, options=opts)

    return make


@pytest.fixture
def run_build(make_builder: Callable[..., Builder]) -> RunBuild:
    async def run(template: Any, **options: Any) -> tuple[BuildResult, Builder]:
        builder = make_builder(template, **options)
        return await builder.run(), builder

    return run
