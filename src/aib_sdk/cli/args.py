"""The ``aib`` argument parser class and the parsers of option values (``--param``, ``--timeout``,
``--map-uri``).

Each value parser raises :class:`~aib_sdk.errors.UsageError` with a message naming the option and the bad value.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeAlias
from urllib.parse import urlparse

from aib_sdk.errors import UsageError

if TYPE_CHECKING:
    Subcommands: TypeAlias = argparse._SubParsersAction["Parser"]
    """What ``add_subparsers`` returns: each command group adds its parsers to it."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ArgumentError(Exception):
    """A command-line usage error found by argparse (exit code 1, not argparse's 2)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        self.parser, self.message = parser, message
        super().__init__(message)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`ArgumentError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(self, message)


def config_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` to a subcommand (it may also stand before the subcommand)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (default: AIB_CONFIG or $XDG_CONFIG_HOME/aib/aib.toml)",
    )


def parse_params(values: Iterable[str]) -> dict[str, str]:
    """``K=V`` pairs (``--param``); a later value for the same name wins."""
    params: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param expects NAME=VALUE, got {item!r}")
        params[name.strip()] = value
    return params


def parse_timeout(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1h``, ``1h30m`` or ``1.5h`` (``--timeout``)."""
    value = text.strip().lower()
    pos, total = 0, 0.0
    units_seen: list[str] = []
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None:
            break
        number, unit = match.groups()
        if (not unit and (pos != 0 or match.end() != len(value))) or unit in units_seen:
            break
        units_seen.append(unit)
        total += float(number) * _UNITS[unit]
        pos = match.end()
    if not value or pos != len(value):
        raise UsageError(f"--timeout expects a duration such as 90, 90s, 5m or 1h, got {text!r}")
    if total <= 0:
        raise UsageError(f"--timeout must be longer than zero, got {text!r}")
    return total


def parse_map_uri(values: Iterable[str], *, cwd: Path | None = None) -> dict[str, str]:
    """``PREFIX=REPLACEMENT`` pairs (``--map-uri``); a folder path (relative to ``cwd``) becomes a ``file://`` URI.

    The split is at the first ``=`` followed by a URI or an absolute path, so prefixes may hold ``=`` (query
    strings). A ``file://`` replacement must be absolute and free of ``..``; a prefix ending in ``/`` keeps its
    replacement ending in ``/`` too.
    """
    from aib_sdk.routing import local_file_path

    mapping: dict[str, str] = {}
    for item in values:
        prefix = replacement = ""
        for match in re.finditer("=", item):
            rest = item[match.end() :]
            if _SCHEME.match(rest) or rest.startswith("/"):
                prefix, replacement = item[: match.start()], rest
                break
        if not replacement and "=" in item:  # a relative folder: split at the last '='
            prefix, _, replacement = item.rpartition("=")
        if not prefix or not replacement:
            raise UsageError(f"--map-uri expects PREFIX=file:///DIR/ (or PREFIX=URI, PREFIX=DIR), got {item!r}")
        if not _SCHEME.match(replacement):
            folder = Path(replacement).expanduser()
            keep_slash = replacement.endswith("/")
            replacement = (folder if folder.is_absolute() else (cwd or Path.cwd()) / folder).as_posix()
            replacement = "file://" + replacement + ("/" if keep_slash else "")
        if urlparse(replacement).scheme.lower() == "file":
            try:
                local_file_path(replacement)  # absolute, no '..'
            except UsageError as exc:
                raise UsageError(f"--map-uri {item!r}: {exc}") from None
        if prefix.endswith("/") and not replacement.endswith("/"):
            replacement += "/"
        mapping[prefix] = replacement
    return mapping
