"""Core fixtures: isolated plugin managers with the fakes, event recorders, an isolated ``AIB_HOME``.

- ``aib_fakes`` — the :class:`~aib_sdk.testing.fakes.FakePlugin` of this test (its ``world`` records everything);
- ``aib_plugins`` — a :class:`PluginManager` with the built-ins and ``aib_fakes``, no entry points;
- ``aib_register`` — ``aib_register(plugin)`` adds a (third-party) plugin to ``aib_plugins``;
- ``aib_events`` — an :class:`~aib_sdk.testing.recorder.EventRecorder`;
- ``aib_home`` — ``AIB_HOME``/``AIB_CACHE`` under ``tmp_path`` (environment patched for this test); returns a
  :class:`Config` reading that environment;
- ``aib_build`` — ``await aib_build(template, **options)`` runs a real Builder on all of the above;
- ``aib_ssh_server`` — a running :class:`~aib_sdk.testing.ssh_server.LoopbackSshServer` (for anyio tests).

Nothing here is autouse.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aib_sdk.config import Config
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.result import BuildResult
from aib_sdk.testing.fakes import FakePlugin, fake_plugin
from aib_sdk.testing.recorder import EventRecorder

if TYPE_CHECKING:
    from aib_sdk.testing.ssh_server import LoopbackSshServer

__all__ = ["aib_build", "aib_events", "aib_fakes", "aib_home", "aib_plugins", "aib_register", "aib_ssh_server"]

BuildFunction = Callable[..., Awaitable[BuildResult]]


@pytest.fixture
def aib_fakes() -> Iterator[FakePlugin]:
    """The fake source ``FakeImage``, build host ``fake``, step ``FakeStep`` and target ``FakeTarget``.

    At teardown, a command rule set with ``world.on_command(...)`` that no command matched fails the test.
    """
    plugin = fake_plugin()
    yield plugin
    plugin.world.check_rules()


@pytest.fixture
def aib_plugins(aib_fakes: FakePlugin) -> PluginManager:
    """An isolated plugin manager: built-ins plus the fakes; installed entry points are not loaded."""
    return PluginManager(entry_points=False, plugins=[aib_fakes], disabled=())


@pytest.fixture
def aib_register(aib_plugins: PluginManager) -> Callable[..., None]:
    """Register a plugin (an object or module with ``@hookimpl`` functions) into ``aib_plugins``."""

    def register(plugin: object, name: str | None = None) -> None:
        aib_plugins.register(plugin, name=name)

    return register


@pytest.fixture
def aib_events() -> EventRecorder:
    """An event sink recording every event (pass as ``BuildOptions(on_event=aib_events)``)."""
    return EventRecorder()


@pytest.fixture
def aib_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """``AIB_HOME`` and ``AIB_CACHE`` under ``tmp_path`` for this test; a :class:`Config` seeing them."""
    home, cache = tmp_path / "aib-home", tmp_path / "aib-cache"
    home.mkdir()
    cache.mkdir()
    monkeypatch.setenv("AIB_HOME", str(home))
    monkeypatch.setenv("AIB_CACHE", str(cache))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    return Config({})


@pytest.fixture
def aib_build(aib_plugins: PluginManager, aib_events: EventRecorder, aib_home: Config) -> BuildFunction:
    """``await aib_build(template, **options)`` → :class:`BuildResult`: a real Builder on ``aib_plugins`` (the
    fakes, plus what ``aib_register`` added), build host ``fake`` unless ``build_host=`` says otherwise, events
    into ``aib_events``, state under ``aib_home``."""

    async def build(template: Any, **options: Any) -> BuildResult:
        from aib_sdk.builder import Builder

        options.setdefault("build_host", "fake")
        opts = BuildOptions(config=aib_home, plugins=aib_plugins, on_event=aib_events, **options)
        return await Builder(template, options=opts).run()

    return build


@pytest.fixture
async def aib_ssh_server(tmp_path: Path) -> AsyncIterator[LoopbackSshServer]:
    """A running loopback SSH test server rooted in ``tmp_path / "ssh-root"`` (needs an anyio test)."""
    from aib_sdk.testing.ssh_server import LoopbackSshServer

    async with LoopbackSshServer(tmp_path / "ssh-root") as server:
        yield server
