"""The ``aib`` command line: a thin face over the SDK (``validate``, ``build``, ``schema``, ``plugins``, ``runs``,
``show``, ``delete``, plus the subcommands providers add through the ``aib_add_cli_commands`` hook).

``main(argv)`` returns the exit code and never shows a traceback (set ``AIB_DEBUG=1`` to see one): template and
usage errors exit 1, other failures 2; ``aib build`` exits 0/2/3/130 for Succeeded/Failed/PartiallySucceeded/
Canceled. Heavy modules are imported inside the commands so that ``aib --help`` stays fast; ``validate``,
``schema`` and ``plugins`` need no event loop and run without importing asyncio or any provider's SDK.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from aib_sdk.errors import AibError, Issue, PluginError, TemplateError, UsageError

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.plugins.manager import PluginManager

PROG = "aib"
CORE_COMMANDS = ("validate", "build", "schema", "plugins", "runs", "show", "delete", "cache", "gc")


class ArgumentError(Exception):
    """A command-line usage error found by argparse (exit code 1, not argparse's 2)."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        self.parser, self.message = parser, message
        super().__init__(message)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`ArgumentError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(self, message)


def out(text: str = "") -> None:
    """Print a line on stdout (looked up at call time, so tests can capture it), redacted."""
    from aib_sdk.redaction import redact_text

    print(redact_text(text), file=sys.stdout)


def err(text: str) -> None:
    """Print a line on stderr, redacted (URL queries, known secrets)."""
    from aib_sdk.redaction import redact_text

    print(redact_text(text), file=sys.stderr)


def issue_line(file: str, issue: Issue, *, warning: bool = False) -> str:
    """``FILE:PATH: message`` (``FILE:PATH: warning: message`` for a warning; ``FILE: message`` without a path)."""
    where = f"{file}:{issue.path}" if issue.path else file
    return f"{where}: {'warning: ' if warning else ''}{issue.message}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aib-sdk")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, looking the installed version up only when asked (the lookup scans installed packages)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        out(f"{PROG} {_version()}")
        parser.exit()


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (default: AIB_CONFIG or $XDG_CONFIG_HOME/aib/aib.toml)",
    )


def build_parser(plugins: PluginManager | None = None) -> Parser:
    """The ``aib`` parser; with ``plugins``, their subcommands are added too."""
    parser = Parser(prog=PROG, description="Build VM images from Azure VM Image Builder templates, anywhere.")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    parser.add_argument("--config", metavar="FILE", default=None, help="configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("validate", help="check templates against AIB's rules and the installed providers")
    p.add_argument("files", nargs="+", metavar="FILE", help="template files (AIB properties, resource or ARM)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter value (repeatable)")
    _config_option(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("build", help="build an image from a template")
    p.add_argument("file", metavar="FILE", help="template file")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter value (repeatable)")
    p.add_argument("--profile", metavar="NAME", help="a build profile (local: Azure ids go to the local gallery)")
    p.add_argument("--source", metavar="SPEC", help="replace the source: a JSON spec, a disk path or a disk URL")
    p.add_argument(
        "--map-uri",
        action="append",
        default=[],
        metavar="PREFIX=URI",
        help="fetch URIs starting with PREFIX from URI instead, e.g. file:///dir/ (repeatable)",
    )
    p.add_argument(
        "--context",
        metavar="DIR",
        help="the build context: local files the template names must lie under DIR (default: its folder)",
    )
    p.add_argument("--timeout", metavar="DURATION", help="override buildTimeoutInMinutes: 90, 90s, 5m, 1h")
    p.add_argument("--resource", metavar="NAME", help="which image template of an ARM deployment to build")
    p.add_argument("--json", action="store_true", help="print only the run result as JSON on stdout")
    p.add_argument("--build-host", metavar="NAME", help="which build host to use (default: the first available)")
    p.add_argument("--create-missing", action="store_true", help="create missing galleries and image definitions")
    p.add_argument("--trust-on-first-use", action="store_true", help="accept a guest host key that could not be pinned")
    p.add_argument("--no-cache", action="store_true", help="run every step; use and keep no step-cache layers")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="RUN_ID",
        help="resume a failed run (default: the template's last): reuse its layers up to the first changed or "
        "failed step",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "rich", "plain", "none"),
        default="auto",
        help="progress display on stderr (auto: live on a terminal, one line per event otherwise)",
    )
    _config_option(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("schema", help="print the JSON Schema of templates for the installed providers")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("plugins", help="list installed plugins and the types each handles")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("runs", help="list runs (newest first)")
    p.add_argument("template", nargs="?", metavar="TEMPLATE", help="only runs of this template")
    p.add_argument("--json", action="store_true", help="print JSON")
    _config_option(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="show a run's record and log path")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("--log", action="store_true", help="print the run's customization.log")
    _config_option(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("delete", help="remove a template's staging directories")
    p.add_argument("template", metavar="TEMPLATE", help="template name")
    _config_option(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("gc", help="release what crashed (killed) builds left behind and mark those runs Failed")
    p.add_argument("--dry-run", action="store_true", help="only list what would be released")
    p.add_argument("--json", action="store_true", help="print JSON")
    _config_option(p)
    p.set_defaults(func=cmd_gc)

    from aib_sdk.cli_temporal import add_temporal_commands

    add_temporal_commands(sub)

    from aib_sdk.cli_cache import add_cache_parser

    add_cache_parser(sub, _config_option)

    if plugins is not None:
        plugins.add_cli_commands(sub)
    return parser


def _wants_plugin_commands(argv: Sequence[str]) -> bool:
    """Provider subcommands are loaded only for help or a command the core does not have."""
    for arg in argv:
        if arg == "--version":
            return False
        if arg in ("-h", "--help"):
            return True
        if not arg.startswith("-"):
            return arg not in CORE_COMMANDS
    return True


def _plugin_manager() -> PluginManager:
    from aib_sdk.plugins.manager import PluginManager

    return PluginManager()


def plugins_of(args: argparse.Namespace) -> PluginManager:
    """The invocation's plugin manager (entry points included), created on first use."""
    pm: PluginManager | None = getattr(args, "plugins", None)
    if pm is None:
        pm = _plugin_manager()
        args.plugins = pm
    return pm


def config_of(args: argparse.Namespace) -> Config:
    from aib_sdk.config import Config

    return Config.load(getattr(args, "config", None))


# Commands ------------------------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from aib_sdk.cli_args import parse_params
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


async def cmd_build(args: argparse.Namespace) -> int:
    from aib_sdk.cli_build import run_build

    return await run_build(args, plugins_of(args), config_of(args))


def cmd_schema(args: argparse.Namespace) -> int:
    from aib_sdk.plugins import catalog as plugin_catalog

    pm = plugins_of(args)
    current = pm.catalog()  # built once per installation: a current catalogue may already hold the schema
    text = plugin_catalog.load_schema(current) if current is not None else None
    if text is None:
        from aib_sdk.models.schema import template_json_schema

        text = json.dumps(template_json_schema(pm), indent=2)
        if current is not None:
            plugin_catalog.save_schema(current, text)
    out(text)
    return 0


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
    listing: dict[str, dict[str, Any]] = {}
    for plugin, entries in pm.types_by_plugin().items():
        ver = versions.get(plugin)
        kinds: dict[str, list[str]] = {}
        for entry in entries:
            kind, _, name = entry.partition(":")
            kinds.setdefault(kind, []).append(name)
        listing[plugin] = {"version": ver, "types": kinds}
    for plugin, error in broken.items():
        listing[plugin] = {"version": None, "types": {}, "error": error}
    if args.json:
        out(json.dumps(listing, indent=2))
    else:
        for plugin, data in listing.items():
            out(plugin + (f" {data['version']}" if data["version"] else ""))
            if "error" in data:
                out(f"  failed to load: {data['error']}")
            for kind, names in data["types"].items():
                out(f"  {kind}: {', '.join(names)}")
    return 1 if broken else 0


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
        out(json.dumps(rows, indent=2))
        return 0
    if not rows:
        err("no runs" + (f" of {args.template}" if args.template else ""))
        return 0
    header = ("RUN ID", "TEMPLATE", "STATE", "START", "END")
    table = [header] + [
        (r["runId"], r["templateName"], r["runState"], r["startTime"] or "-", r["endTime"] or "-") for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        out("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
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
    out(json.dumps(record.data, indent=2) if record.data else f"run {record.run_id}: no run.json was written")
    out(f"log: {record.log_file}")
    return 0


async def cmd_delete(args: argparse.Namespace) -> int:
    from aib_sdk.staging import delete_staging

    for path in await delete_staging(config_of(args), args.template):
        out(f"removed {path}")
    return 0


async def cmd_gc(args: argparse.Namespace) -> int:
    from aib_sdk.gc import collect_garbage

    runs = await collect_garbage(config_of(args), plugins_of(args), dry_run=args.dry_run)
    if args.json:
        out(json.dumps([r.to_json() for r in runs], indent=2))
    elif not runs:
        err("nothing to collect: no run was left behind by a dead builder")
    for run in runs if not args.json else []:
        for line in run.lines():
            out(line)
    return 0 if all(r.ok for r in runs) else 2


# Entry point ---------------------------------------------------------------------------------------------------


def _run(func: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    import anyio

    if inspect.iscoroutinefunction(func):
        code = anyio.run(functools.partial(func, args), backend="asyncio")
    else:
        code = func(args)
    return int(code or 0)


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested groups (task groups wrap even a single error), else the group itself."""
    current: BaseException = group
    while isinstance(current, BaseExceptionGroup) and len(current.exceptions) == 1:
        current = current.exceptions[0]
    return current


def _main(arguments: list[str]) -> int:
    pm = None
    if _wants_plugin_commands(arguments):
        try:
            pm = _plugin_manager()
            parser = build_parser(pm)
        except PluginError as exc:
            err(f"aib: warning: provider commands unavailable: {exc}")
            pm, parser = None, build_parser(None)
    else:
        parser = build_parser(None)
    try:
        args = parser.parse_args(arguments)
    except ArgumentError as exc:
        exc.parser.print_usage(sys.stderr)
        err(f"{exc.parser.prog}: error: {exc.message}")
        return 1
    if pm is not None:
        args.plugins = pm
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 1
    return _run(func, args)


def _failure(exc: BaseException, debug: bool) -> int:
    """The exit code for an exception that reached the top, after printing one line about it."""
    if isinstance(exc, BaseExceptionGroup):
        exc = unwrap(exc)
    if isinstance(exc, SystemExit):  # --help, --version, or a command that called sys.exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(exc, KeyboardInterrupt):
        err("aib: interrupted")
        return 130
    if isinstance(exc, BrokenPipeError):  # the reader went away (``aib runs | head``)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, TemplateError):
        for issue in exc.issues:
            err(f"aib: error: {issue}")
        return 1
    if isinstance(exc, UsageError):
        err(f"aib: error: {exc}")
        return 1
    if isinstance(exc, AibError):
        err(f"aib: error: {exc}")
        return 2
    if isinstance(exc, Exception | BaseExceptionGroup):
        err(f"aib: error: {type(exc).__name__}: {exc}")
        return 2
    raise exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aib`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code. Never shows a traceback
    unless ``AIB_DEBUG=1``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(arguments)
    except BaseException as exc:
        return _failure(exc, os.environ.get("AIB_DEBUG", "") not in ("", "0"))
    finally:
        if argv is None:
            # Run as the program, the process ends next: spare it the collector's last sweep over every object
            # (0.2 s and more after a build). Finalizers and atexit handlers still run.
            import gc

            gc.freeze()


def console() -> NoReturn:
    """The ``aib`` console script: :func:`main`, then exit. After a Temporal command the process ends with
    ``os._exit`` once stdout/stderr are flushed: temporalio's native threads can abort interpreter shutdown
    (temporalio/sdk-python#300)."""
    code = main()
    if "temporalio" in sys.modules:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)
