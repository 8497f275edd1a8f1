"""The typed event stream of a build.

Every event is a frozen pydantic model discriminated on ``kind``. The Builder emits them synchronously through an
:class:`EventSink` (emitting never blocks the emitter); the CLI's live display, the per-run
``customization.log`` and ``builder.events()`` are all consumers of the same stream.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, TypeAdapter

RunState = Literal["Running", "Canceling", "Succeeded", "PartiallySucceeded", "Failed", "Canceled"]
RunSubState = Literal["Queued", "Building", "Customizing", "Optimizing", "Validating", "Distributing"]
StepPhase = Literal["customize", "optimize", "validate", "deprovision"]


def _now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    time: datetime = Field(default_factory=_now)


class RunStarted(_Event):
    kind: Literal["run-started"] = "run-started"
    run_id: str
    template_name: str
    staging_directory: str


class PhaseChanged(_Event):
    """``lastRunStatus`` moved: a new run sub-state (or a new run state such as Canceling)."""

    kind: Literal["phase"] = "phase"
    run_state: RunState
    run_sub_state: RunSubState


class StepStarted(_Event):
    kind: Literal["step-started"] = "step-started"
    phase: StepPhase
    index: int
    name: str
    type: str


class StepFinished(_Event):
    kind: Literal["step-finished"] = "step-finished"
    phase: StepPhase
    index: int
    name: str
    type: str
    ok: bool
    duration: float
    exit_code: int | None = None
    error: str | None = None
    cached: bool = False
    """The step was not run: the build booted a stored disk layer holding its result (the step cache)."""
    layer: str | None = None
    """With ``cached``: the first 12 hex digits of that layer's key."""
    ram_state: bool = False
    """With ``cached`` (the last cached step): the build resumed the RAM state kept with that layer, no boot."""


class LogLine(_Event):
    """One line of output: a step's stdout/stderr, the guest's serial console, or a provider's own log."""

    kind: Literal["log"] = "log"
    source: str
    stream: Literal["stdout", "stderr", "serial", "info"] = "stdout"
    line: str


class Progress(_Event):
    """How far a long operation got: ``task`` is download, convert, upload, replicate, copy …

    ``done``/``total`` count bytes, or the operation's steps when ``unit`` is ``"steps"`` (a bootstrap's phases).
    """

    kind: Literal["progress"] = "progress"
    task: str
    label: str
    done: int
    total: int | None = None
    target: str | None = None
    region: str | None = None
    unit: Literal["bytes", "steps"] = "bytes"

    @property
    def percent(self) -> float | None:
        return None if not self.total else 100.0 * self.done / self.total


TargetState = Literal["Running", "Succeeded", "Failed", "Canceled"]


class TargetStatus(_Event):
    """A distribution target (``region`` None) or one of its regions changed state."""

    kind: Literal["target"] = "target"
    run_output_name: str
    type: str
    region: str | None = None
    state: TargetState
    message: str = ""
    artifact_id: str | None = None
    artifact_uri: str | None = None


class WarningEvent(_Event):
    """Something the user should know that did not stop the run (a template warning, a cleanup that failed)."""

    kind: Literal["warning"] = "warning"
    message: str


Warning = WarningEvent
"""Deprecated name of :class:`WarningEvent` (it shadows the builtin ``Warning``); kept for existing code."""


class RunFinished(_Event):
    kind: Literal["run-finished"] = "run-finished"
    run_state: RunState
    run_sub_state: RunSubState
    message: str = ""


Event = Annotated[
    RunStarted
    | PhaseChanged
    | StepStarted
    | StepFinished
    | LogLine
    | Progress
    | TargetStatus
    | WarningEvent
    | RunFinished,
    Discriminator("kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

EventSink = Callable[[Event], None]
"""Emits one event. Never blocks and never raises into the emitter."""


def null_sink(event: Event) -> None:
    """An :data:`EventSink` that drops everything."""
