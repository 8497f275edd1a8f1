"""``aib plugins [--json]``: the installed plugins, their versions and the types each handles (exit 1 when one is
broken and left out)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, NotRequired, TypedDict

from aib_sdk.cli.output import out, out_json

if TYPE_CHECKING:
    from aib_sdk.plugins.manager import PluginManager


class PluginListing(TypedDict):
    """One plugin in ``aib plugins --json``."""

    version: str | None
    types: dict[str, list[str]]  # kind → type names
    error: NotRequired[str]


def _loadable_plugins() -> tuple[PluginManager, dict[str, str], dict[str, str | None]]:
    """A manager without the entry points that fail to import, those failures (name → error), and the versions."""
    from importlib.metadata import PackageNotFoundError, entry_points, version

    from aib_sdk.plugins import PROJECT
    from aib_sdk.plugins.manager import BUILTIN_PLUGIN, PluginManager, disabled_by_env

    disabled = disabled_by_env()
    broken: dict[str, str] = {}
    versions: dict[str, str | None] = {}
    try:
        versions[BUILTIN_PLUGIN] = version(BUILTIN_PLUGIN)
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        versions[BUILTIN_PLUGIN] = None
    for ep in entry_points(group=PROJECT):
        versions[ep.name] = getattr(getattr(ep, "dist", None), "version", None)
        if ep.name in disabled:
            continue
        try:
            ep.load()  # the hooks module only: a broken plugin shows here, not as a failure of the whole listing
        except Exception as exc:
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
    return PluginManager(disabled=disabled | set(broken)), broken, versions


def cmd_plugins(args: argparse.Namespace) -> int:
    pm, broken, versions = _loadable_plugins()
    listing: dict[str, PluginListing] = {}
    for plugin, entries in pm.types_by_plugin().items():
        kinds: dict[str, list[str]] = {}
        for entry in entries:
            kind, _, name = entry.partition(":")
            kinds.setdefault(kind, []).append(name)
        listing[plugin] = {"version": versions.get(plugin), "types": kinds}
    broken.update(pm.broken_plugins())  # plugins that loaded but registered a class missing a required member
    for plugin, error in broken.items():
        known = listing.get(plugin)
        listing[plugin] = {"version": known["version"] if known else None, "types": {}, "error": error}
    if args.json:
        out_json(listing)
    else:
        for plugin, data in listing.items():
            out(plugin + (f" {data['version']}" if data["version"] else ""))
            if "error" in data:
                out(f"  broken, left out: {data['error']}")
            for kind, names in data["types"].items():
                out(f"  {kind}: {', '.join(names)}")
    return 1 if broken else 0
