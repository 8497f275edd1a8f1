"""``aib build``: options from the command line, the live display, Ctrl-C handling and the result report.

The first Ctrl-C (or SIGTERM) asks the Builder to cancel, which runs every cleanup and ends the run as
``Canceled`` (exit 130); a second one cancels the run at once (its shielded cleanups still get their bounded few
seconds); a third one interrupts the process.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from aib_sdk.cli.args import parse_map_uri, parse_params, parse_timeout
from aib_sdk.cli.output import err, err_template_error, out
from aib_sdk.cli.progress import make_display
from aib_sdk.context import Staging
from aib_sdk.errors import TemplateError, UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.result import BuildResult
from aib_sdk.runtime import raise_first

if TYPE_CHECKING:
    from aib_sdk.builder import Builder
    from aib_sdk.config import Config
    from aib_sdk.plugins.manager import PluginManager

CANCELED_EXIT = 130


def load_builder() -> type[Builder]:
    """The Builder class (imported on first use: the CLI module stays light)."""
    from aib_sdk.builder import Builder

    return Builder


async def make_options(args: argparse.Namespace, plugins: PluginManager, config: Config) -> BuildOptions:
    """:class:`BuildOptions` from the parsed ``aib build`` arguments (each bad value is a :class:`UsageError`)."""
    template = Path(args.file).expanduser()
    return BuildOptions(
        params=parse_params(args.param),
        profile=args.profile,
        source=args.source,  # the Builder reads it as --source text (JSON, disk URL or path)
        uri_map=parse_map_uri(args.map_uri),
        timeout=parse_timeout(args.timeout) if args.timeout else None,
        resource=args.resource,
        build_host=args.build_host,
        plugins=plugins,
        config=config,
        create_missing=args.create_missing,
        trust_on_first_use=args.trust_on_first_use,
        cache=not getattr(args, "no_cache", False),
        ram_state=not getattr(args, "no_ram_state", False),
        resume=getattr(args, "resume", None),
        base_directory=template.absolute().parent,
        context=Path(args.context).expanduser().absolute() if getattr(args, "context", None) else None,
    )


def log_path(result: BuildResult) -> Path | None:
    """Where the run's ``customization.log`` is."""
    if result.staging_directory is None:
        return None
    staging = Path(result.staging_directory)
    for candidate in (Staging(staging, result.run_id).log_file, staging / "customization.log"):
        if candidate.exists():
            return candidate
    return Staging(staging, result.run_id).log_file


def report(result: BuildResult, *, as_json: bool) -> int:
    """Print the result (JSON alone on stdout with ``as_json``), explain a failure on stderr, return the exit code."""
    status = result.last_run_status
    if as_json:
        out(result.to_json())
    else:
        out(f"run {result.run_id} of {result.template_name}: {status.run_state}")
        for name, output in result.run_outputs.items():
            where = output.artifact_id or output.artifact_uri or output.error or ""
            out(f"  {name}: {output.provisioning_state}" + (f" {where}" if where else ""))
        if result.source_exact_version:
            out(f"  source version: {result.source_exact_version}")
        if result.staging_directory:
            out(f"  staging: {result.staging_directory}")
    if status.run_state != "Succeeded":
        if status.message:
            err(f"aib: {status.run_state} ({status.run_sub_state}): {status.message}")
        else:
            err(f"aib: {status.run_state} ({status.run_sub_state})")
        for name, output in result.run_outputs.items():
            if output.provisioning_state != "Succeeded" and output.error:
                err(f"aib: target {name}: {output.error}")
        log = log_path(result)
        if log is not None:
            err(f"aib: log: {log}")
    return result.exit_code


async def _cancel(builder: Builder) -> None:
    with contextlib.suppress(Exception):
        await builder.cancel()


async def _watch_signals(builder: Builder, scope: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: cancel the build cleanly (in the background); second: cancel it at once."""
    receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
    try:
        signals = receiver.__enter__()
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread: Ctrl-C stays a KeyboardInterrupt
        await anyio.sleep_forever()
    try:
        async with anyio.create_task_group() as tg:
            count = 0
            async for _ in signals:
                count += 1
                if count == 1:
                    err("aib: cancelling the build and cleaning up (Ctrl-C again to stop waiting)")
                    tg.start_soon(_cancel, builder)
                else:
                    err("aib: stopping now (cleanup gets a few more seconds; Ctrl-C again to abandon it)")
                    scope.cancel()
                    return
    finally:
        receiver.__exit__(None, None, None)


async def _collect_dead_runs(config: Config, plugins: PluginManager) -> None:
    """Before building: release what builds killed earlier left behind (``aib gc``, bounded), saying so."""
    from aib_sdk.gc import quick_gc

    for run in await quick_gc(config, plugins):
        for line in run.lines():
            err(f"aib: gc: {line}")


async def run_build(args: argparse.Namespace, plugins: PluginManager, config: Config) -> int:
    """Run ``aib build``; return its exit code."""
    template = Path(args.file).expanduser()
    if not await anyio.Path(template).exists():
        raise UsageError(f"template file not found: {args.file}")
    if not await anyio.Path(template).is_file():
        raise UsageError(f"cannot read {args.file}: not a regular file (a template is a JSON file)")
    await _collect_dead_runs(config, plugins)
    options = await make_options(args, plugins, config)
    display = make_display(sys.stderr, args.progress)
    options.on_event = display
    builder_class = load_builder()
    result: BuildResult | None = None
    with display if display is not None else contextlib.nullcontext():
        try:
            builder = builder_class(template, options=options)
            with raise_first():
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_watch_signals, builder, tg.cancel_scope)
                    result = await builder.run()
                    tg.cancel_scope.cancel()
        except TemplateError as exc:
            return err_template_error(args.file, exc)
    if result is None:
        err("aib: build canceled")
        return CANCELED_EXIT
    return report(result, as_json=args.json)
