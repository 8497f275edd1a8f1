"""Step-cache tests: builds on the fakes (whose machines keep JSON 'layers') with an isolated AIB_HOME and cache."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aib_sdk.builder import Builder
from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult
from aib_sdk.testing.fakes import FakePlugin
from aib_sdk.testing.recorder import EventRecorder

RunBuild = Callable[..., Awaitable[tuple[BuildResult, Builder]]]


@pytest.fixture
def layered(aib_fakes: FakePlugin) -> FakePlugin:
    """The fakes, with machines that snapshot their disk (the LayeredMachine members)."""
    aib_fakes.world.keep_layers = True
    return aib_fakes


@pytest.fixture
def cache_dir(aib_home: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "layers"
    monkeypatch.setenv("AIB_CACHE_DIR", str(path))
    return path


@pytest.fixture
def make_builder(
    aib_plugins: PluginManager, aib_events: EventRecorder, aib_home: Config, cache_dir: Path, tmp_path: Path
) -> Callable[..., Builder]:
    def make(template: Any, **options: Any) -> Builder:
        import os

        options.setdefault("build_host", "fake")
        options.setdefault("base_directory", tmp_path)
        options.setdefault("on_event", aib_events)
        config = Config({}, dict(os.environ))  # sees the AIB_* variables the fixtures set
        return Builder(template, options=BuildOptions(config=config, plugins=aib_plugins, **options))

    return make


@pytest.fixture
def run_build(make_builder: Callable[..., Builder]) -> RunBuild:
    async def run(template: Any, **options: Any) -> tuple[BuildResult, Builder]:
        builder = make_builder(template, **options)
        return await builder.run(), builder

    return run
