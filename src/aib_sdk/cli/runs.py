"""``aib runs``, ``aib show`` and ``aib delete``: the local runs' records, logs and staging directories."""

from __future__ import annotations

import argparse
import sys

from aib_sdk.cli.invocation import config_of
from aib_sdk.cli.output import err, out, out_json, out_table
from aib_sdk.errors import UsageError


async def cmd_runs(args: argparse.Namespace) -> int:
    from aib_sdk.staging import list_runs

    records = await list_runs(config_of(args), args.template)
    rows = [
        {
            "runId": r.run_id,
            "templateName": r.template_name,
            "runState": r.run_state,
            "startTime": r.last_run_status.get("startTime"),
            "endTime": r.last_run_status.get("endTime"),
            "runDirectory": str(r.run_directory),
        }
        for r in records
    ]
    if args.json:
        out_json(rows)
        return 0
    if not rows:
        err("no runs" + (f" of {args.template}" if args.template else ""))
        return 0
    out_table(
        ("RUN ID", "TEMPLATE", "STATE", "START", "END"),
        [(r["runId"], r["templateName"], r["runState"], r["startTime"] or "-", r["endTime"] or "-") for r in rows],
    )
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    import anyio

    from aib_sdk.staging import load_run

    record = await load_run(config_of(args), args.run)
    log = anyio.Path(record.log_file)
    if args.log:
        if not await log.is_file():
            raise UsageError(f"run {record.run_id} has no log at {record.log_file}")
        sys.stdout.write(await log.read_text(encoding="utf-8", errors="replace"))
        sys.stdout.flush()
        return 0
    if record.data:
        out_json(record.data)
    else:
        out(f"run {record.run_id}: no run.json was written")
    out(f"log: {record.log_file}")
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    from aib_sdk.staging import delete_staging

    for path in await delete_staging(config_of(args), args.template):
        out(f"removed {path}")
    return 0
