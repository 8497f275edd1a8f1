"""What every ``aib`` command prints: redacted lines on stdout/stderr, ``FILE:PATH: message`` issue lines,
column tables and ``--json`` documents."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from aib_sdk.errors import Issue, TemplateError


def out(text: str = "") -> None:
    """Print a line on stdout (looked up at call time, so tests can capture it), redacted."""
    from aib_sdk.redaction import redact_text

    print(redact_text(text), file=sys.stdout)


def err(text: str) -> None:
    """Print a line on stderr, redacted (URL queries, known secrets)."""
    from aib_sdk.redaction import redact_text

    print(redact_text(text), file=sys.stderr)


def out_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (what ``--json`` shows)."""
    out(json.dumps(value, indent=2))


def issue_line(file: str, issue: Issue, *, warning: bool = False) -> str:
    """``FILE:PATH: message`` (``FILE:PATH: warning: message`` for a warning; ``FILE: message`` without a path)."""
    where = f"{file}:{issue.path}" if issue.path else file
    return f"{where}: {'warning: ' if warning else ''}{issue.message}"


def err_template_error(file: str, exc: TemplateError) -> int:
    """Print a rejected template's warnings and errors as issue lines on stderr; return the exit code, 1."""
    for issue in exc.warnings:
        err(issue_line(file, issue, warning=True))
    for issue in exc.issues:
        err(issue_line(file, issue))
    return 1


def out_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print ``rows`` under ``header`` in left-aligned columns two spaces apart (trailing blanks stripped)."""
    table: list[list[str]] = [list(header), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        out("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
