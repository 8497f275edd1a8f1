"""Plugin machinery: pluggy hookspecs that register classes, and an instance-scoped manager."""

from __future__ import annotations

import pluggy

PROJECT = "aib_sdk"
"""The entry-point group, the pluggy project name and the manager name."""

hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]
