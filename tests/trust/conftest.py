"""Shared fixtures of the trust tests: the CLI with the fake plugin, state under ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from aib_sdk.cli import invocation
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.testing.fakes import FakePlugin, fake_plugin


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePlugin:
    """The CLI's plugin manager gets the fake plugin (no entry points); state goes under tmp_path."""
    plugin = fake_plugin()
    monkeypatch.setattr(invocation, "new_plugin_manager", lambda: PluginManager(entry_points=False, plugins=[plugin]))
    monkeypatch.setenv("AIB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.delenv("AIB_CONFIG", raising=False)
    return plugin
