"""How ``aib build`` shows a run on stderr: a rich live display on a terminal, one line per event otherwise.

Both are plain :data:`~aib_sdk.events.EventSink` consumers; neither blocks for long nor raises into the emitter.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from typing import TYPE_CHECKING, TextIO

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
    WarningEvent,
)

if TYPE_CHECKING:
    from rich.console import Group, RenderableType
    from rich.live import Live
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _amount(ev: Progress) -> str:
    """``1.5/4.0 GiB``, or ``1/4 steps`` for an operation counted in steps."""
    if ev.unit == "steps":
        return f"{ev.done}/{ev.total or '?'} steps"
    return f"{_size(ev.done)}/{_size(ev.total)}" if ev.total else _size(ev.done)


def _progress_key(ev: Progress) -> tuple[str, str, str | None, str | None]:
    return (ev.task, ev.label, ev.target, ev.region)


def _progress_name(ev: Progress) -> str:
    where = "/".join(p for p in (ev.target, ev.region) if p)
    return f"{ev.task} {ev.label}" + (f" [{where}]" if where else "")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _step_name(ev: StepStarted | StepFinished) -> str:
    return f"{ev.phase}[{ev.index}] {ev.name} ({ev.type})"


def _layer_text(ev: StepFinished) -> str:
    """``layer 3fa1c2…`` of a cached step, and whether its RAM state was restored (the guest did not boot)."""
    return f"layer {ev.layer or '?'}" + (", RAM state restored" if ev.ram_state else "")


class PlainDisplay:
    """One line per event on ``stream``; progress is printed at each quarter (or every 10 s without a total)."""

    def __init__(self, stream: TextIO, *, show_logs: bool = True) -> None:
        self.stream = stream
        self.show_logs = show_logs
        self._quarters: dict[tuple[str, str, str | None, str | None], int] = {}
        self._last_time: dict[tuple[str, str, str | None, str | None], float] = {}

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()

    def _line(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not break the build
            pass

    def __call__(self, ev: Event) -> None:
        text = self.render(ev)
        if text is not None:
            self._line(text)

    def render(self, ev: Event) -> str | None:
        """The line for ``ev``, or ``None`` when it is not worth a line."""
        if isinstance(ev, RunStarted):
            return f"==> run {ev.run_id} of {ev.template_name} (staging: {ev.staging_directory})"
        if isinstance(ev, PhaseChanged):
            return f"==> {ev.run_state}: {ev.run_sub_state}"
        if isinstance(ev, StepStarted):
            return f"--> {_step_name(ev)}"
        if isinstance(ev, StepFinished):
            if ev.ok:
                if ev.cached:
                    return f"<-- {_step_name(ev)} cached ({_layer_text(ev)})"
                return f"<-- {_step_name(ev)} ran, done in {ev.duration:.1f}s"
            code = f" (exit code {ev.exit_code})" if ev.exit_code is not None else ""
            return f"<-- {_step_name(ev)} FAILED after {ev.duration:.1f}s{code}" + (
                f": {_first_line(ev.error)}" if ev.error else ""
            )
        if isinstance(ev, LogLine):
            return f"    {ev.source}: {ev.line}" if self.show_logs else None
        if isinstance(ev, Progress):
            return self._render_progress(ev)
        if isinstance(ev, TargetStatus):
            where = ev.run_output_name + (f" [{ev.region}]" if ev.region else "")
            extra = ev.artifact_id or ev.artifact_uri or ""
            text = f"==> target {where} ({ev.type}): {ev.state}"
            return text + (f" {extra}" if extra else "") + (f": {ev.message}" if ev.message else "")
        if isinstance(ev, WarningEvent):
            return f"warning: {ev.message}"
        if isinstance(ev, RunFinished):
            return f"==> run {ev.run_state}" + (f": {_first_line(ev.message)}" if ev.message else "")
        return None

    def _render_progress(self, ev: Progress) -> str | None:
        key = _progress_key(ev)
        if ev.unit == "steps":
            return f"    {_progress_name(ev)}: {ev.done} of {ev.total or '?'} steps done"
        if ev.total:
            quarter = min(4, int(4 * ev.done / ev.total))
            if self._quarters.get(key, -1) >= quarter:
                return None
            self._quarters[key] = quarter
            return f"    {_progress_name(ev)}: {quarter * 25}% ({_size(ev.done)} of {_size(ev.total)})"
        now = time.monotonic()
        if now - self._last_time.get(key, -1e9) < 10:
            return None
        self._last_time[key] = now
        return f"    {_progress_name(ev)}: {_size(ev.done)}"


class RichDisplay:
    """A live view: run phase, the current step, its last log lines and a bar per transfer/target/region.

    Step results, target results and warnings are printed above the live area so they stay in the scrollback.
    """

    def __init__(self, stream: TextIO, *, log_lines: int = 8) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.console = Console(file=stream, stderr=True, highlight=False)
        self.bars: RichProgress = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[amount]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._tasks: dict[tuple[str, str, str | None, str | None], TaskID] = {}
        self.logs: deque[str] = deque(maxlen=log_lines)
        self.header = "starting"
        self.phase = "Queued"
        self.step = ""
        self.started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> RichDisplay:
        from rich.live import Live

        self._live = Live(self, console=self.console, refresh_per_second=8, transient=True)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def __rich__(self) -> Group:
        from rich.console import Group
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        parts: list[RenderableType] = [Text(f"{self.header}  {self.phase}  {elapsed:.0f}s", style="bold")]
        if self.step:
            parts.append(Text(f"  {self.step}", style="cyan"))
        parts.extend(Text(f"    {line}", style="dim", overflow="ellipsis", no_wrap=True) for line in self.logs)
        if self._tasks:
            parts.append(self.bars)
        return Group(*parts)

    def _print(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""), highlight=False)

    def __call__(self, ev: Event) -> None:
        with contextlib.suppress(Exception):  # a display problem must never break the build
            self._handle(ev)

    def _handle(self, ev: Event) -> None:
        if isinstance(ev, RunStarted):
            self.header = f"{ev.template_name} {ev.run_id}"
            self._print(f"run {ev.run_id} of {ev.template_name} (staging: {ev.staging_directory})")
        elif isinstance(ev, PhaseChanged):
            self.phase = f"{ev.run_state}: {ev.run_sub_state}"
        elif isinstance(ev, StepStarted):
            self.step = _step_name(ev)
            self.logs.clear()
        elif isinstance(ev, StepFinished):
            self.step = ""
            if ev.ok:
                if ev.cached:
                    self._print(f"✓ {_step_name(ev)} cached ({_layer_text(ev)})", "green")
                else:
                    self._print(f"✓ {_step_name(ev)} ran {ev.duration:.1f}s", "green")
            else:
                code = f" exit code {ev.exit_code}" if ev.exit_code is not None else ""
                self._print(
                    f"✗ {_step_name(ev)} {ev.duration:.1f}s{code}" + (f": {_first_line(ev.error)}" if ev.error else ""),
                    "red",
                )
        elif isinstance(ev, LogLine):
            self.logs.append(f"{ev.source}: {ev.line}")
        elif isinstance(ev, Progress):
            key = _progress_key(ev)
            task = self._tasks.get(key)
            if task is None:
                task = self.bars.add_task(_progress_name(ev), total=ev.total, amount="")
                self._tasks[key] = task
            self.bars.update(task, completed=ev.done, total=ev.total, amount=_amount(ev))
        elif isinstance(ev, TargetStatus):
            if ev.state != "Running":
                where = ev.run_output_name + (f" [{ev.region}]" if ev.region else "")
                extra = ev.artifact_id or ev.artifact_uri or ev.message
                style = "green" if ev.state == "Succeeded" else "red"
                self._print(f"{'✓' if ev.state == 'Succeeded' else '✗'} target {where}: {ev.state} {extra}", style)
        elif isinstance(ev, WarningEvent):
            self._print(f"warning: {ev.message}", "yellow")
        elif isinstance(ev, RunFinished):
            self.phase = ev.run_state


def make_display(stream: TextIO, mode: str) -> PlainDisplay | RichDisplay | None:
    """``mode``: ``auto`` (rich on a terminal, plain otherwise), ``rich``, ``plain`` or ``none``."""
    if mode == "none":
        return None
    if mode == "rich" or (mode == "auto" and _is_terminal(stream)):
        return RichDisplay(stream)
    return PlainDisplay(stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False
