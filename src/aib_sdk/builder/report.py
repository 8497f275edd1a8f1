"""What a finished run reports: the immutable :class:`RunReport` an execution returns, and the run's event sink.

The Builder turns a report into the :class:`~aib_sdk.result.BuildResult` and ``run.json``; nothing else of the
execution is read. :class:`RunRecorder` is the sink every event of the run goes through (the execution's own and
its providers', by ``RunContext.emit``): it keeps the warnings and step records, redacted as every consumer sees
them, and forwards each event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from aib_sdk.artifacts import ProvisioningState, RunOutput
from aib_sdk.events import Event, EventSink, RunState, RunSubState, StepFinished, WarningEvent
from aib_sdk.redaction import redact
from aib_sdk.result import LastRunStatus

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def frozen_mapping(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``data``."""
    return MappingProxyType(dict(data))


def step_entry(step: StepFinished) -> dict[str, Any]:
    """The entry of ``run.json``'s ``details.steps`` for one step that ended."""
    return {
        "phase": step.phase,
        "index": step.index,
        "name": step.name,
        "type": step.type,
        "ok": step.ok,
        "duration": round(step.duration, 3),
        "exitCode": step.exit_code,
        "error": step.error,
        "cached": step.cached,
        "layer": step.layer,
    }


@dataclass(frozen=True)
class TargetOutcome:
    """The final state of one distribution target (``Canceled`` when the run ended before it finished)."""

    run_output_name: str
    type: str
    state: ProvisioningState
    artifact_id: str | None = None
    artifact_uri: str | None = None
    error: str | None = None
    regions: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    def run_output(self) -> RunOutput:
        """The ``runOutputs/{name}`` resource (a fresh mutable copy)."""
        return RunOutput(
            self.run_output_name,
            artifact_id=self.artifact_id,
            artifact_uri=self.artifact_uri,
            provisioning_state=self.state,
            error=self.error,
            regions=dict(self.regions),
        )


@dataclass(frozen=True)
class RunReport:
    """Everything a run ended with; built once, when the run ends, and never changed."""

    run_id: str
    template_name: str
    template_digest: str
    run_state: RunState
    run_sub_state: RunSubState
    message: str
    start_time: datetime | None
    end_time: datetime | None
    source_exact_version: str | None = None
    steps: tuple[StepFinished, ...] = ()
    """Every step that ended (ran, failed, was cancelled or came from the step cache), in order."""
    outputs: Mapping[str, TargetOutcome] = field(default_factory=lambda: _EMPTY)
    """Per ``runOutputName``, in the template's order (targets refused by their preflight included)."""
    kept_vm: str | None = None
    """How to reach the VM kept by ``errorHandling: abort``; while set, the run's work directory stays."""
    warnings: tuple[str, ...] = ()
    phases: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    """Seconds spent in each run sub-state, in order."""
    optimization: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    """``optimize.vmBoot``: the first boot's and the next boot's seconds to ready."""
    cache: Mapping[str, Any] | None = None
    """The step cache's report (``None`` when the run opened no cache)."""

    def status(self) -> LastRunStatus:
        """AIB's ``lastRunStatus`` of the run (a fresh mutable copy)."""
        return LastRunStatus(
            run_state=self.run_state,
            run_sub_state=self.run_sub_state,
            message=self.message,
            start_time=self.start_time,
            end_time=self.end_time,
        )

    @property
    def duration_seconds(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return round((self.end_time - self.start_time).total_seconds(), 3)


class RunRecorder:
    """The run's event sink: keeps warnings and step records (redacted), then forwards every event."""

    def __init__(self, forward: EventSink) -> None:
        self._forward = forward
        self.warnings: list[str] = []
        self.steps: list[StepFinished] = []

    def emit(self, event: Event) -> None:
        if isinstance(event, StepFinished):
            self.steps.append(redact(event))
        elif isinstance(event, WarningEvent):
            self.warnings.append(redact(event).message)
        self._forward(event)
