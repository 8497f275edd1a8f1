"""``BuildResult``: AIB's ``lastRunStatus`` and ``runOutputs`` for one run, plus where its records are."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aib_sdk.artifacts import RunOutput
from aib_sdk.errors import BuildCancelled, BuildError, BuildTimeout
from aib_sdk.events import RunState, RunSubState

TIMEOUT_MESSAGE = "build timed out"
"""How the message of a run stopped by its build timeout begins."""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@dataclass
class LastRunStatus:
    run_state: RunState = "Running"
    run_sub_state: RunSubState = "Queued"
    message: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The camelCase ``lastRunStatus`` object."""
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
    """The outcome of ``await Builder(...).run()``.

    :meth:`to_json` is the ``aib build --json`` document as JSON text, :meth:`to_dict` the same as a dict;
    :meth:`raise_for_state` turns a run that did not succeed into an exception, for callers that prefer one.
    """

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

    def to_dict(self) -> dict[str, Any]:
        """The ``aib build --json`` document (camelCase keys, as in AIB's REST API)."""
        return {
            "runId": self.run_id,
            "templateName": self.template_name,
            "lastRunStatus": self.last_run_status.to_dict(),
            "runOutputs": {name: out.to_dict() for name, out in self.run_outputs.items()},
            "source": {"exactVersion": self.source_exact_version},
            "stagingDirectory": str(self.staging_directory) if self.staging_directory else None,
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text (what ``aib build --json`` prints)."""
        return json.dumps(self.to_dict(), indent=indent)

    def raise_for_state(self) -> BuildResult:
        """Return ``self`` when the run succeeded; else raise :class:`~aib_sdk.errors.BuildCancelled` (cancelled),
        :class:`~aib_sdk.errors.BuildTimeout` (``buildTimeoutInMinutes``/``--timeout`` ran out) or
        :class:`~aib_sdk.errors.BuildError` (failed, or only partly succeeded), carrying the run's message."""
        state, message = self.run_state, self.last_run_status.message
        if state == "Succeeded":
            return self
        text = f"{self.template_name} run {self.run_id}: {state}" + (f": {message}" if message else "")
        if state == "Canceled":
            raise BuildCancelled(text)
        if message.startswith(TIMEOUT_MESSAGE):
            raise BuildTimeout(text)
        raise BuildError(text)
