"""``aib gc [--dry-run] [--json]``: release what crashed (killed) builds left behind and mark those runs Failed
(exit 2 when something could not be released)."""

from __future__ import annotations

import argparse

from aib_sdk.cli.invocation import config_of, plugins_of
from aib_sdk.cli.output import err, out, out_json


async def cmd_gc(args: argparse.Namespace) -> int:
    from aib_sdk.gc import collect_garbage

    runs = await collect_garbage(config_of(args), plugins_of(args), dry_run=args.dry_run)
    if args.json:
        out_json([r.to_json() for r in runs])
    else:
        if not runs:
            err("nothing to collect: no run was left behind by a dead builder")
        for run in runs:
            for line in run.lines():
                out(line)
    return 0 if all(r.ok for r in runs) else 2
