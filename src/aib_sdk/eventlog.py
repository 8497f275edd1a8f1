"""``customization.log``: the run's event stream written as AIB-like, UTC-timestamped text lines.

Each step is bracketed by ``(telemetry) Starting provisioner <shell|powershell|file|…>`` and
``(telemetry) ending <…>`` as AIB's log does, so "search for (telemetry) from the bottom" finds the last step;
every line a step printed is in between. Phase changes, warnings, targets and the final status are logged too.
Events carry no secrets (the Builder's event hub passes each through :mod:`aib_sdk.redaction`), so neither does
this file; it is created 0600.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from aib_sdk.events import (
    Event,
    LogLine,
    PhaseChanged,
    Progress,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    TargetStatus,
    Warning,
)
from aib_sdk.private_files import private_opener

_log = logging.getLogger("aib_sdk.eventlog")

PROVISIONERS = {
    "Shell": "shell",
    "PowerShell": "powershell",
    "File": "file",
    "WindowsRestart": "windows-restart",
    "WindowsUpdate": "windows-update",
}


def provisioner_name(step_type: str) -> str:
    """The Packer provisioner name AIB logs for a step type (``WindowsRestart`` → ``windows-restart``)."""
    known = PROVISIONERS.get(step_type)
    if known:
        return known
    return re.sub(r"(?<!^)(?=[A-Z])", "-", step_type).lower()


def _stamp(time: datetime) -> str:
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_event(event: Event) -> list[str]:
    """The log lines for one event (without timestamps); empty for events the log leaves out."""
    match event:
        case RunStarted():
            return [
                f"Starting run {event.run_id} of template {event.template_name!r}",
                f"Staging directory: {event.staging_directory}",
            ]
        case PhaseChanged():
            return [f"Run state: {event.run_state} / {event.run_sub_state}"]
        case StepStarted():
            return [
                f"(telemetry) Starting provisioner {provisioner_name(event.type)}",
                f"==> {event.phase}[{event.index}] {event.name!r} ({event.type})",
            ]
        case StepFinished():
            if event.ok:
                outcome = f"succeeded in {event.duration:.2f}s"
            else:
                code = f", exit code {event.exit_code}" if event.exit_code is not None else ""
                outcome = f"failed after {event.duration:.2f}s{code}"
            lines = [f"==> {event.phase}[{event.index}] {event.name!r} {outcome}"]
            if event.error:
                lines += [f"    {line}" for line in event.error.splitlines()]
            lines.append(f"(telemetry) ending {provisioner_name(event.type)}")
            return lines
        case LogLine():
            tag = "" if event.stream == "stdout" else f" ({event.stream})"
            # One log line per line of text: a line holding newlines cannot forge entries of its own.
            return [f"    {event.source}{tag}: {line}" for line in event.line.splitlines() or [""]]
        case Progress():
            if event.total is not None and event.done >= event.total:
                where = f" {event.target}" if event.target else ""
                where += f" [{event.region}]" if event.region else ""
                return [f"{event.task}{where}: {event.label}: {event.done} bytes done"]
            return []
        case TargetStatus():
            region = f" [{event.region}]" if event.region else ""
            extra = f": {event.message}" if event.message else ""
            extra += f" ({event.artifact_id})" if event.artifact_id else ""
            return [f"distribute {event.run_output_name!r} ({event.type}){region}: {event.state}{extra}"]
        case Warning():
            return [f"WARNING: {line}" for line in event.message.splitlines() or [""]]
        case RunFinished():
            lines = [f"Run finished: {event.run_state} / {event.run_sub_state}"]
            lines += [f"    {line}" for line in event.message.splitlines()]
            lines.append("(telemetry) Finalizing.")
            return lines
    return []


def render(event: Event) -> str:
    """The event's log lines, each prefixed by its UTC timestamp, newline-terminated."""
    stamp = _stamp(event.time)
    return "".join(f"{stamp} {line}\n" for line in format_event(event))


async def write_log(events: MemoryObjectReceiveStream[Event], path: Path) -> None:
    """Append every event of ``events`` to ``path`` until the stream ends, in batches (one worker-thread call each).

    Runs shielded from cancellation: it ends when the stream's sender closes (after ``RunFinished``), so the
    last lines of a cancelled run are still written. A file that cannot be written (disk full) never breaks the
    build: the error is logged once and the rest of the stream is drained.
    """
    with anyio.CancelScope(shield=True):
        async with events:
            file: TextIO | None = None
            try:
                await anyio.Path(path).parent.mkdir(parents=True, exist_ok=True)
                file = await anyio.to_thread.run_sync(
                    lambda: open(path, "a", encoding="utf-8", opener=private_opener)  # noqa: SIM115
                )
            except OSError:
                _log.exception("cannot open %s; the run's log is not kept", path)
            try:
                async for event in events:
                    chunks = [render(event)]
                    while True:
                        try:
                            chunks.append(render(events.receive_nowait()))
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    if file is None:
                        continue
                    try:
                        await anyio.to_thread.run_sync(_append, file, "".join(chunks))
                    except OSError:
                        _log.exception("cannot write %s; the rest of the run's log is lost", path)
                        await anyio.to_thread.run_sync(_close, file)
                        file = None
            finally:
                if file is not None:
                    await anyio.to_thread.run_sync(_close, file)


def _append(file: TextIO, text: str) -> None:
    file.write(text)
    file.flush()


def _close(file: TextIO) -> None:
    with contextlib.suppress(OSError):
        file.close()
