"""``aib cache ls [--json]`` and ``aib cache prune [--max-size SIZE] [--older-than AGE]``: the step cache's layers."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from aib_sdk.cache.settings import CacheSettings, parse_age, parse_size
from aib_sdk.cache.store import LayerInfo, LayerStore
from aib_sdk.cli.args import Parser, config_option
from aib_sdk.cli.invocation import config_of
from aib_sdk.cli.output import err, out, out_json, out_table
from aib_sdk.errors import UsageError

if TYPE_CHECKING:
    from aib_sdk.cli.args import Subcommands


def add_parsers(sub: Subcommands) -> None:
    """Add ``aib cache`` and its subcommands to the ``aib`` parser."""
    p = sub.add_parser("cache", help="list or prune the step cache's disk layers")
    cache_sub = p.add_subparsers(dest="cache_command", metavar="SUBCOMMAND", parser_class=Parser)
    ls = cache_sub.add_parser("ls", help="list layers (least recently used first)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    config_option(ls)
    ls.set_defaults(func=cmd_cache_ls)
    prune = cache_sub.add_parser("prune", help="remove layers (with every layer built on them); in-use layers stay")
    prune.add_argument("--max-size", metavar="SIZE", help="remove least recently used layers down to SIZE (e.g. 5G)")
    prune.add_argument("--older-than", metavar="AGE", help="remove layers unused for AGE (e.g. 12h, 7d)")
    prune.add_argument("--json", action="store_true", help="print the removed layers as JSON")
    config_option(prune)
    prune.set_defaults(func=cmd_cache_prune)
    p.set_defaults(func=_cache_help, cache_parser=p)


def _cache_help(args: argparse.Namespace) -> int:
    args.cache_parser.print_help()
    return 1


def _store(args: argparse.Namespace) -> tuple[LayerStore, CacheSettings]:
    settings = CacheSettings.from_config(config_of(args))
    return LayerStore(settings.directory), settings


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def layer_json(store: LayerStore, info: LayerInfo) -> dict[str, Any]:
    return {
        "key": info.key,
        "parent": info.parent,
        "file": str(store.file_path(info)),
        "format": info.format,
        "size": info.size,
        "ramState": info.ram_state is not None,
        "created": _iso(info.created),
        "lastUsed": _iso(info.last_used),
        "template": info.template,
        "step": info.step,
        "stepIndex": info.step_index,
        "type": info.type,
        "buildHost": info.host,
        "runId": info.run_id,
        "sourceVersion": info.source_version,
    }


def _human(size: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


async def cmd_cache_ls(args: argparse.Namespace) -> int:
    store, settings = _store(args)
    layers = await anyio.to_thread.run_sync(store.layers)
    if args.json:
        out_json([layer_json(store, info) for info in layers])
        return 0
    if not layers:
        err(f"no layers in {settings.directory}")
        return 0
    rows = [
        (
            info.key[:12],
            _human(info.size),
            _iso(info.last_used),
            info.template,
            f"{info.step_index + 1}:{info.step}",
            info.parent[:12] if info.parent else "-",
        )
        for info in layers
    ]
    out_table(("KEY", "SIZE", "LAST USED", "TEMPLATE", "STEP", "PARENT"), rows)
    total = sum(info.size for info in layers)
    cap = _human(settings.max_size) if settings.max_size else "none"
    out(f"{len(layers)} layer(s), {_human(total)} in {settings.directory} (max_size {cap})")
    return 0


async def cmd_cache_prune(args: argparse.Namespace) -> int:
    store, _ = _store(args)
    max_size = parse_size(args.max_size, what="--max-size") if args.max_size is not None else None
    older = parse_age(args.older_than) if args.older_than is not None else None
    if max_size is None and older is None:
        raise UsageError("aib cache prune needs --max-size SIZE and/or --older-than AGE (--max-size 0 empties it)")
    removed = await anyio.to_thread.run_sync(lambda: store.prune(max_size=max_size, older_than=older, now=time.time()))
    if args.json:
        out_json([layer_json(store, info) for info in removed])
        return 0
    for info in removed:
        out(f"removed {info.key[:12]} ({_human(info.size)}, {info.template} step {info.step_index + 1}:{info.step})")
    out(f"removed {len(removed)} layer(s), {_human(sum(i.size for i in removed))}")
    return 0
