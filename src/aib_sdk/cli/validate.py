"""``aib validate FILE...``: check templates against AIB's rules and the installed providers (exit 1 on an error;
warnings go to stderr and leave the exit code 0). Needs no event loop."""

from __future__ import annotations

import argparse
from pathlib import Path

from aib_sdk.cli.args import parse_params
from aib_sdk.cli.invocation import plugins_of
from aib_sdk.cli.output import err, issue_line, out
from aib_sdk.errors import TemplateError, UsageError


def cmd_validate(args: argparse.Namespace) -> int:
    from aib_sdk.models.loader import read_json_file, validate_document

    params = parse_params(args.param)
    pm = plugins_of(args)
    failed = False
    for file in args.files:
        try:
            doc = read_json_file(Path(file))  # no event loop runs here: a plain read blocks nothing
        except TemplateError as exc:
            failed = True
            for issue in exc.issues:
                out(issue_line(file, issue))
            continue
        except (UsageError, OSError) as exc:
            failed = True
            out(f"{file}: {exc}")
            continue
        errors, warnings = validate_document(doc, plugins=pm, params=params)
        for issue in warnings:
            err(issue_line(file, issue, warning=True))
        for issue in errors:
            out(issue_line(file, issue))
        failed = failed or bool(errors)
    return 1 if failed else 0
