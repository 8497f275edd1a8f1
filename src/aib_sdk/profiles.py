"""Build profiles: named sets of build options, from ``[profiles.NAME]`` in ``aib.toml`` or built in.

A profile table may hold:

- ``redirect_arm_ids = "local"``: rewrite every Azure ARM id of the source and the targets to subscription
  ``local`` (the built-in profile ``local`` is exactly this), so an AIB template rehearses offline;
- ``params = { name = "value" }``: parameter values (``--param`` given on the command line win);
- ``map_uri = { "https://raw.githubusercontent.com/org/" = "file:///srv/scripts/" }``: URI rewrites
  (``--map-uri`` wins for the same prefix);
- ``source``: a source spec (table) or a disk path, as ``--source``;
- ``build_host``, ``create_missing``, ``timeout`` (seconds): as the options of the same names;
- ``network``: the build VM's network (``[qemu] network``: ``nat``, ``restrict``, ``bridge:br0`` …), over the
  configuration file and ``AIB_QEMU_NETWORK``.

Explicit options always win over the profile's values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.options import BuildOptions

BUILTIN_PROFILES: dict[str, dict[str, Any]] = {"local": {"redirect_arm_ids": "local"}}
_KEYS = {"redirect_arm_ids", "params", "map_uri", "source", "build_host", "create_missing", "timeout", "network"}


def profile_table(name: str, config: Config) -> dict[str, Any]:
    """The merged table of profile ``name`` (built-in values, then the config file's); raise if unknown."""
    table = dict(BUILTIN_PROFILES.get(name, {}))
    table.update(config.profile(name))
    if not table and name not in BUILTIN_PROFILES:
        known = sorted({*BUILTIN_PROFILES, *(config.data.get("profiles") or {})})
        raise UsageError(f"unknown profile {name!r} (known: {', '.join(known)}); define it as [profiles.{name}]")
    unknown = set(table) - _KEYS
    if unknown:
        raise UsageError(
            f"[profiles.{name}]: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})"
        )
    redirect = table.get("redirect_arm_ids")
    if redirect not in (None, "local"):
        raise UsageError(f'[profiles.{name}] redirect_arm_ids must be "local", not {redirect!r}')
    return table


def apply_profile_options(options: BuildOptions, config: Config) -> tuple[BuildOptions, str | None]:
    """Return the options with the profile's values filled in, and the id rewrite to apply (``"local"`` or None)."""
    if not options.profile:
        return options, None
    table = profile_table(options.profile, config)
    changes: dict[str, Any] = {}
    params = table.get("params")
    if isinstance(params, dict):
        changes["params"] = {**{str(k): str(v) for k, v in params.items()}, **options.params}
    uri_map = table.get("map_uri")
    if isinstance(uri_map, dict):
        changes["uri_map"] = {**{str(k): str(v) for k, v in uri_map.items()}, **options.uri_map}
    if options.source is None and table.get("source") is not None:
        source = table["source"]
        changes["source"] = dict(source) if isinstance(source, dict) else Path(str(source)).expanduser()
    if options.build_host is None and table.get("build_host"):
        changes["build_host"] = str(table["build_host"])
    if not options.create_missing and table.get("create_missing"):
        changes["create_missing"] = bool(table["create_missing"])
    if options.timeout is None and table.get("timeout") is not None:
        changes["timeout"] = float(table["timeout"])
    if table.get("network"):
        qemu = config.data.get("qemu")
        data = {**config.data, "qemu": {**(qemu if isinstance(qemu, dict) else {}), "network": str(table["network"])}}
        changes["config"] = Config(data, {k: v for k, v in config.env.items() if k != "AIB_QEMU_NETWORK"})
    return dataclasses.replace(options, **changes), table.get("redirect_arm_ids")
