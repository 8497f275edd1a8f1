"""``BuildResult``: AIB's ``lastRunStatus`` and ``runOutputs`` for one run, plus where its records are."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aib_sdk.artifacts import RunOutput
from aib_sdk.events import RunState, RunSubState


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass
class LastRunStatus:
    run_state: RunState = "Running"
    run_sub_state: RunSubState = "Queued"
    message: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "runState": self.run_state,
            "runSubState": self.run_sub_state,
            "message": self.message,
            "startTime": _iso(self.start_time),
            "endTime": _iso(self.end_time),
        }


EXIT_CODES: dict[str, int] = {"Succeeded": 0, "Failed": 2, "PartiallySucceeded": 3, "Canceled": 130}
"""``aib build`` exit code per final run state (1 is kept for template and usage errors)."""


@dataclass
class BuildResult:
    """The outcome of ``await Builder(...).run()``; ``to_json()`` gives the ``aib build --json`` shape."""

    run_id: str
    template_name: str
    last_run_status: LastRunStatus
    run_outputs: dict[str, RunOutput] = field(default_factory=dict)
    source_exact_version: str | None = None
    staging_directory: Path | None = None

    @property
    def run_state(self) -> RunState:
        return self.last_run_status.run_state

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.run_state, 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "templateName": self.template_name,
            "lastRunStatus": self.last_run_status.to_json(),
            "runOutputs": {name: out.to_json() for name, out in self.run_outputs.items()},
            "source": {"exactVersion": self.source_exact_version},
            "stagingDirectory": str(self.staging_directory) if self.staging_directory else None,
        }
