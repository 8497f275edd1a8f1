"""The ``aib`` parser and dispatch: ``main(argv)`` parses, runs the command (async ones in an event loop) and
turns what reaches the top into one line and an exit code.

Template and usage errors exit 1, other failures 2; ``aib build`` exits 0/2/3/130 for Succeeded/Failed/
PartiallySucceeded/Canceled. The commands live in one module per group beside this one; ``validate``, ``schema``
and ``plugins`` need no event loop and run without importing asyncio or any provider's SDK.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from aib_sdk.cli import cache, invocation, temporal
from aib_sdk.cli.args import ArgumentError, Parser, config_option
from aib_sdk.cli.gc import cmd_gc
from aib_sdk.cli.invocation import config_of, plugins_of
from aib_sdk.cli.output import err, out
from aib_sdk.cli.plugins import cmd_plugins
from aib_sdk.cli.runs import cmd_delete, cmd_runs, cmd_show
from aib_sdk.cli.schema import cmd_schema
from aib_sdk.cli.validate import cmd_validate
from aib_sdk.errors import AibError, PluginError, TemplateError, UsageError

if TYPE_CHECKING:
    from aib_sdk.plugins.manager import PluginManager

PROG = "aib"
CORE_COMMANDS = ("validate", "build", "schema", "plugins", "runs", "show", "delete", "cache", "gc")
Command = Callable[[argparse.Namespace], int | Awaitable[int]]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aib-sdk")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, looking the installed version up only when asked (the lookup scans installed packages)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> NoReturn:
        out(f"{PROG} {_version()}")
        parser.exit()


def build_parser(plugins: PluginManager | None = None) -> Parser:
    """The ``aib`` parser; with ``plugins``, their subcommands are added too."""
    parser = Parser(prog=PROG, description="Build VM images from Azure VM Image Builder templates, anywhere.")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    parser.add_argument("--config", metavar="FILE", default=None, help="configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("validate", help="check templates against AIB's rules and the installed providers")
    p.add_argument("files", nargs="+", metavar="FILE", help="template files (AIB properties, resource or ARM)")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="a parameter value (repeatable)")
    config_option(p)
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
        "--no-ram-state", action="store_true", help="boot cached layers; keep and resume no RAM state with them"
    )
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
    config_option(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("schema", help="print the JSON Schema of templates for the installed providers")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("plugins", help="list installed plugins and the types each handles")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("runs", help="list runs (newest first)")
    p.add_argument("template", nargs="?", metavar="TEMPLATE", help="only runs of this template")
    p.add_argument("--json", action="store_true", help="print JSON")
    config_option(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("show", help="show a run's record and log path")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("--log", action="store_true", help="print the run's customization.log")
    config_option(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("delete", help="remove a template's staging directories")
    p.add_argument("template", metavar="TEMPLATE", help="template name")
    config_option(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("gc", help="release what crashed (killed) builds left behind and mark those runs Failed")
    p.add_argument("--dry-run", action="store_true", help="only list what would be released")
    p.add_argument("--json", action="store_true", help="print JSON")
    config_option(p)
    p.set_defaults(func=cmd_gc)

    temporal.add_parsers(sub)
    cache.add_parsers(sub)

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


async def cmd_build(args: argparse.Namespace) -> int:
    from aib_sdk.cli.build import run_build  # the Builder and its models load only for a build

    return await run_build(args, plugins_of(args), config_of(args))


# Entry point ---------------------------------------------------------------------------------------------------


def _run(func: Command, args: argparse.Namespace) -> int:
    """Run a command; an async one in a new event loop (asyncio)."""
    if inspect.iscoroutinefunction(func):
        import anyio

        code = anyio.run(functools.partial(func, args), backend="asyncio")
    else:
        code = func(args)
    return int(code or 0)


def _main(arguments: list[str]) -> int:
    pm: PluginManager | None = None
    if _wants_plugin_commands(arguments):
        try:
            pm = invocation.new_plugin_manager()  # looked up here: tests put their own plugins in
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
        from aib_sdk.runtime import first_error  # only on a failure: the runtime imports asyncio

        exc = first_error(exc)
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


def _show_plugin_warnings() -> None:
    """Print the plugin manager's warnings (a broken plugin left out) as ``aib: warning: …`` lines on stderr."""
    import logging

    class StderrWarnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            err(f"aib: warning: {record.getMessage()}")

    logger = logging.getLogger("aib_sdk.plugins")
    if not any(type(h).__name__ == "StderrWarnings" for h in logger.handlers):
        logger.addHandler(StderrWarnings(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``aib`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code. Never shows a traceback
    unless ``AIB_DEBUG=1``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _show_plugin_warnings()
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
