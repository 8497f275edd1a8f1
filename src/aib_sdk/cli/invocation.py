"""What one ``aib`` invocation shares between its commands: the plugin manager and the configuration, each made
on first use (``aib --version`` needs neither)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.plugins.manager import PluginManager


def new_plugin_manager() -> PluginManager:
    """A plugin manager with the installed plugins (entry points); tests replace it with their own plugins."""
    from aib_sdk.plugins.manager import PluginManager

    return PluginManager()


def plugins_of(args: argparse.Namespace) -> PluginManager:
    """The invocation's plugin manager (entry points included), created on first use."""
    pm: PluginManager | None = getattr(args, "plugins", None)
    if pm is None:
        pm = new_plugin_manager()
        args.plugins = pm
    return pm


def config_of(args: argparse.Namespace) -> Config:
    """The configuration named by ``--config`` (default: ``AIB_CONFIG`` or the XDG location)."""
    from aib_sdk.config import Config

    return Config.load(getattr(args, "config", None))
