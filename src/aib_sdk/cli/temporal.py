"""``aib`` on a Temporal cluster: ``aib worker``, ``aib cancel``, and ``--temporal`` on ``build``, ``runs``, ``show``.

``--temporal`` without a value takes ``[temporal] address`` from aib.toml. temporalio is imported only when one
of these runs (the ``aib-sdk[temporal]`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aib_sdk.cli.args import config_option
from aib_sdk.cli.invocation import config_of, plugins_of
from aib_sdk.cli.output import err, err_template_error, out, out_json, out_table
from aib_sdk.errors import UsageError

if TYPE_CHECKING:
    from aib_sdk.cli.args import Subcommands
    from aib_sdk.config import Config
    from aib_sdk.engines.temporal import RemoteRun, TemporalEngine, TemporalSettings
    from aib_sdk.engines.temporal.capabilities import Capabilities

Command = Callable[[argparse.Namespace], Awaitable[int]]


def _connection_options(parser: argparse.ArgumentParser, *, queue: bool = True) -> None:
    parser.add_argument(
        "--temporal",
        nargs="?",
        const="",
        default=None,
        metavar="HOST:PORT",
        help="use a Temporal cluster (default address: [temporal] address in aib.toml)",
    )
    parser.add_argument("--namespace", metavar="NS", help="Temporal namespace (default: [temporal] namespace)")
    if queue:
        parser.add_argument("--task-queue", metavar="Q", help="base task queue (default: [temporal] task_queue)")


def _remote_or_local(local: Command, remote: Command) -> Command:
    async def dispatch(args: argparse.Namespace) -> int:
        return await (remote(args) if args.temporal is not None else local(args))

    return dispatch


def add_parsers(sub: Subcommands) -> None:
    """Add ``worker`` and ``cancel``, and ``--temporal`` to ``build``, ``runs`` and ``show``."""
    build = sub.choices["build"]
    _connection_options(build)
    build.add_argument("--detach", action="store_true", help="with --temporal: print the run id and return")
    build.set_defaults(func=_remote_or_local(build.get_default("func"), cmd_remote_build))
    runs = sub.choices["runs"]
    _connection_options(runs, queue=False)
    runs.set_defaults(func=_remote_or_local(runs.get_default("func"), cmd_remote_runs))
    show = sub.choices["show"]
    _connection_options(show, queue=False)
    show.set_defaults(func=_remote_or_local(show.get_default("func"), cmd_remote_show))

    p = sub.add_parser("worker", help="run builds from a Temporal cluster on this machine")
    _connection_options(p)
    p.add_argument("--max-builds", type=int, default=1, metavar="N", help="builds run at once (default 1)")
    p.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for running builds before handing them back (default 60)",
    )
    config_option(p)
    p.set_defaults(func=cmd_worker, temporal_required=True)

    p = sub.add_parser("cancel", help="cancel a run on a Temporal cluster")
    p.add_argument("run", metavar="RUN", help="run id")
    _connection_options(p, queue=False)
    config_option(p)
    p.set_defaults(func=cmd_cancel)


def _settings(args: argparse.Namespace, config: Config | None = None) -> TemporalSettings:
    from aib_sdk.engines.temporal import TemporalSettings

    return TemporalSettings.from_config(
        config or config_of(args),
        address=args.temporal or None,
        namespace=getattr(args, "namespace", None),
        task_queue=getattr(args, "task_queue", None),
    )


def _engine(args: argparse.Namespace, config: Config | None = None) -> TemporalEngine:
    try:
        from aib_sdk.engines.temporal import TemporalEngine
    except ImportError as exc:
        raise UsageError(f"--temporal needs the temporal extra: pip install 'aib-sdk[temporal]' ({exc})") from None
    return TemporalEngine(_settings(args, config))


async def cmd_worker(args: argparse.Namespace) -> int:
    if args.max_builds < 1:
        raise UsageError("--max-builds must be at least 1")
    try:
        from aib_sdk.engines.temporal.worker import run_worker
    except ImportError as exc:
        raise UsageError(f"aib worker needs the temporal extra: pip install 'aib-sdk[temporal]' ({exc})") from None
    config = config_of(args)
    settings = _settings(args, config)

    def ready(caps: Capabilities, queues: list[str]) -> None:
        err(f"aib worker: serving {settings.address} namespace {settings.namespace}; {caps.describe()}")
        err(f"aib worker: up to {args.max_builds} build(s) at once from {len(queues)} queue(s): {', '.join(queues)}")

    await run_worker(settings, plugins_of(args), config, max_builds=args.max_builds, grace=args.grace, on_ready=ready)
    err("aib worker: stopped")
    return 0


async def _watch_signals(run: RemoteRun, stop: Callable[[], None]) -> None:
    """First SIGINT/SIGTERM: cancel the remote run (and keep showing its cleanup); second: stop waiting."""
    import anyio

    try:
        receiver = anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        signals = receiver.__enter__()
    except (RuntimeError, ValueError, NotImplementedError):
        await anyio.sleep_forever()
    try:
        count = 0
        async for _ in signals:
            count += 1
            if count == 1:
                err(f"aib: cancelling remote run {run.run_id} (Ctrl-C again to stop waiting)")
                with contextlib.suppress(Exception):
                    await run.cancel()
            else:
                err(f"aib: stopped waiting; run {run.run_id} is being canceled on the cluster")
                stop()
                return
    finally:
        receiver.__exit__(None, None, None)


async def cmd_remote_build(args: argparse.Namespace) -> int:
    import anyio

    from aib_sdk.cli.build import CANCELED_EXIT, make_options, report
    from aib_sdk.cli.progress import make_display
    from aib_sdk.errors import TemplateError
    from aib_sdk.runtime import first_error

    template = Path(args.file).expanduser()
    if not await anyio.Path(template).is_file():
        raise UsageError(f"template file not found: {args.file}")
    config = config_of(args)
    engine = _engine(args, config)
    options = await make_options(args, plugins_of(args), config)
    try:
        run = await engine.submit(template, options)
    except TemplateError as exc:
        return err_template_error(args.file, exc)
    if args.detach:
        out(run.run_id)
        return 0
    display = make_display(sys.stderr, args.progress)
    interrupted = False
    result = None
    with display if display is not None else contextlib.nullcontext():
        try:
            async with anyio.create_task_group() as tg:

                def stop() -> None:
                    nonlocal interrupted
                    interrupted = True
                    tg.cancel_scope.cancel()

                tg.start_soon(_watch_signals, run, stop)
                tg.start_soon(_warn_without_workers, engine, run)
                async for event in run.events():
                    if display is not None:
                        display(event)
                result = await run.result()
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
    if interrupted or result is None:
        err(f"aib: run {run.run_id} canceled")
        return CANCELED_EXIT
    return report(result, as_json=args.json)


async def _warn_without_workers(engine: TemporalEngine, run: RemoteRun) -> None:
    if run.task_queue is None:
        return
    with contextlib.suppress(Exception):  # only a hint; the build waits either way
        if await engine.pollers(engine.settings.task_queue, workflows=True) == 0:
            err(
                f"aib: warning: no aib worker polls task queue {engine.settings.task_queue} on "
                f"{engine.settings.address}; run {run.run_id} waits in Queued until one does"
            )
        elif await engine.pollers(run.task_queue) == 0:
            err(
                f"aib: warning: no worker serves {run.task_queue} right now (the build needs "
                f"{', '.join(run.needs) or 'the core only'}); run {run.run_id} waits in Queued until one does"
            )


async def cmd_remote_runs(args: argparse.Namespace) -> int:
    rows = await _engine(args).list_runs(args.template)
    if args.json:
        out_json(rows)
        return 0
    if not rows:
        err("no runs" + (f" of {args.template}" if args.template else ""))
        return 0
    rows_shown = [
        (
            r["runId"],
            r["templateName"] or "-",
            f"{r['runState']}/{r['runSubState']}" if r["runState"] in ("Running", "Canceling") else r["runState"],
            r["status"] or "-",
            r["startTime"] or "-",
            r["endTime"] or "-",
        )
        for r in rows
    ]
    out_table(("RUN ID", "TEMPLATE", "STATE", "WORKFLOW", "START", "END"), rows_shown)
    return 0


async def cmd_remote_show(args: argparse.Namespace) -> int:
    run = await _engine(args).run(args.run)
    data = await _progress(run)
    if args.log:
        from aib_sdk.eventlog import render
        from aib_sdk.events import EVENT_ADAPTER

        for raw in data["events"]:
            sys.stdout.write(render(EVENT_ADAPTER.validate_python(raw)))
        sys.stdout.flush()
        return 0
    description = await run.handle.describe()
    shown = {
        "runId": run.run_id,
        "status": description.status.name if description.status else None,
        "lastRunStatus": data["state"],
        "attempts": data["attempts"],
        "result": data["result"],
        "events": data["next"],
    }
    out_json(shown)
    return 0


async def _progress(run: RemoteRun) -> dict[str, Any]:
    from temporalio.service import RPCError, RPCStatusCode

    try:
        return await run.snapshot()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise UsageError(f"no run {run.run_id} on the cluster") from None
        raise UsageError(f"cannot read run {run.run_id} from the cluster: {exc}") from None


async def cmd_cancel(args: argparse.Namespace) -> int:
    run = await _engine(args).run(args.run)
    await _progress(run)
    await run.cancel()
    err(f"aib: cancel requested for run {run.run_id}")
    return 0
