"""``Builder``: run one image template with AIB's semantics, as an embeddable async API.

```python
builder = Builder("template.json", options=BuildOptions(params={"imageName": "web"}))
async with anyio.create_task_group() as tg:
    tg.start_soon(show, builder.events())     # typed events, concurrently with the run
    result = await builder.run()              # BuildResult; build failures end in runState Failed, never raise
```

``run()`` raises only before starting (:class:`TemplateError`, :class:`UsageError`, e.g. every missing
``--param`` at once). ``cancel()`` ends the run as ``Canceled``; cancelling the task that awaits ``run()`` does too,
and the cancellation is re-raised after cleanup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from aib_sdk.context import RunContext, Staging
from aib_sdk.errors import UsageError
from aib_sdk.eventlog import write_log
from aib_sdk.events import Event, PhaseChanged, Progress, StepStarted, TargetStatus
from aib_sdk.fetch import UriFetcher
from aib_sdk.journal import Journal
from aib_sdk.options import BuildOptions, with_overrides
from aib_sdk.result import BuildResult
from aib_sdk.runtime import cleanup_scope
from aib_sdk.staging import (
    RunRecord,
    create_staging,
    list_runs,
    load_run,
    new_run_id,
    remove_work,
    resource_group_record,
    safe_template_name,
    write_record,
    write_resource_group,
    write_template,
)

from .cancellation import Cancellation
from .execution import Execution
from .hub import EventHub
from .machine import CLEANUP_TIMEOUT
from .plan import Plan, TemplateInput, make_plan
from .report import RunRecorder, RunReport, TargetOutcome, step_entry


class Builder:
    """Builds one image template: ``await Builder(template, options=...).run()`` → :class:`BuildResult`.

    ``template`` is a JSON file path, a parsed document (any AIB form) or a ``LoadedTemplate``.
    """

    def __init__(self, template: TemplateInput, *, options: BuildOptions | None = None) -> None:
        self.template = template
        self.options = with_overrides(options or BuildOptions())
        self._hub = EventHub(self.options.on_event)
        self._cancellation = Cancellation()
        self._started = False
        self._done: anyio.Event | None = None
        self.plan: Plan | None = None
        self.staging: Staging | None = None
        self.result: BuildResult | None = None

    @property
    def run_id(self) -> str | None:
        return self.staging.run_id if self.staging else None

    def events(self) -> MemoryObjectReceiveStream[Event]:
        """An async-iterable stream of every event of the run (earlier ones first); ends after ``RunFinished``."""
        return self._hub.subscribe()

    async def cancel(self) -> None:
        """Cancel the run (→ ``Canceled``, everything cleaned up) and wait until it has ended."""
        self._cancellation.request()
        if self._done is not None:
            await self._done.wait()

    async def run(self) -> BuildResult:
        """Run the build to a final state and return its result (see the module docstring)."""
        if self._started:
            raise UsageError("a Builder runs once; create a new Builder for another run")
        self._started = True
        self._done = anyio.Event()
        try:
            return await self._run()
        finally:
            self._done.set()

    async def _run(self) -> BuildResult:
        plan = self.plan = await make_plan(self.template, self.options)
        resumed = await _resumed_run(plan) if plan.options.resume else None
        staging = self.staging = await _new_staging(plan, self.options.run_id)
        journal = await anyio.to_thread.run_sync(
            lambda: Journal.create(staging.run_directory, run_id=staging.run_id, template_name=plan.name)
        )
        work_entry = await journal.acquire("file", {"path": str(staging.work)}, "the run's work directory")
        self._hub.listen(_journal_phases(journal))
        await write_template(staging, plan.loaded.raw_properties)
        props = plan.loaded.properties
        group = resource_group_record(
            plan.name, props.staging_resource_group, props.managed_resource_tags, plan.loaded.location
        )
        await write_resource_group(staging, group)
        recorder = RunRecorder(self._hub.emit)
        emit = recorder.emit
        ctx = RunContext(
            run_id=staging.run_id,
            template_name=plan.name,
            template_digest=plan.digest,
            staging=staging,
            config=plan.config,
            options=plan.options,
            emit=emit,
            fetcher=UriFetcher(
                staging.inputs,
                emit=emit,
                uri_map=plan.options.uri_map,
                base_directory=plan.base_directory,
                transport=plan.options.http_transport,
                scratch=staging.work,
                context=plan.context,
            ),
            plugins=plan.plugins,
            journal=journal,
        )
        execution = Execution(
            plan,
            ctx,
            recorder,
            cancellation=self._cancellation,
            resume=(resumed.run_id, resumed.data) if resumed is not None else None,
        )
        log_events = self._hub.subscribe()
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_log, log_events, staging.log_file)
            try:
                notes = [f"{w.path}: {w.message}" if w.path else w.message for w in plan.loaded.warnings]
                await execution.execute(notes)
            finally:
                with cleanup_scope(CLEANUP_TIMEOUT):
                    report = execution.report
                    self._hub.close()
                    self.result = _result(report, staging)
                    if report.kept_vm is None:
                        await remove_work(staging)
                        await journal.release(work_entry)
                    await write_record(staging, _record(self.result, report, staging, group))
        assert self.result is not None
        return self.result


async def _new_staging(plan: Plan, run_id: str | None = None) -> Staging:
    """The staging directories of a new run, under a run id no other run has (retried on a collision).

    A run id the caller chose (a remote engine's) is used as it is; a retry of that run continues in its directory.
    """
    if run_id:
        return await create_staging(plan.config, plan.name, plan.digest, run_id, attempt=True)
    for _attempt in range(9):
        try:
            return await create_staging(plan.config, plan.name, plan.digest, new_run_id())
        except FileExistsError:
            continue
    return await create_staging(plan.config, plan.name, plan.digest, new_run_id())


def _journal_phases(journal: Journal) -> Callable[[Event], None]:
    """An event listener noting the run's phase and current step in its journal (what aib gc reports)."""
    phase, activity = "Queued", ""

    def note(event: Event) -> None:
        nonlocal phase, activity
        if isinstance(event, PhaseChanged):
            phase, activity = event.run_sub_state, ""
            journal.phase(phase)
            return
        if isinstance(event, StepStarted):
            now = f"{event.phase} step {event.name!r}"
        elif isinstance(event, Progress) and event.task == "convert" and phase == "Customizing":
            now = "capturing the disk"
        elif isinstance(event, TargetStatus) and event.state == "Running" and event.region is None:
            now = f"distributing {event.run_output_name}"
        else:
            return
        if now != activity:
            activity = now
            journal.phase(phase, activity)

    return note


async def _resumed_run(plan: Plan) -> RunRecord:
    """``--resume [RUN_ID]``: the run to resume (``latest``: the template's last recorded run)."""
    wanted = plan.options.resume or "latest"
    if not plan.options.cache:
        raise UsageError("--resume reuses the step cache: it cannot be combined with --no-cache")
    if wanted != "latest":
        record = await load_run(plan.config, wanted)
        if record.template_name not in (plan.name, safe_template_name(plan.name)):
            raise UsageError(f"run {wanted} built template {record.template_name!r}, not {plan.name!r}")
        return record
    for record in await list_runs(plan.config, plan.name):
        if record.data:
            return record
    raise UsageError(f"--resume: template {plan.name!r} has no earlier run to resume")


def _result(report: RunReport, staging: Staging) -> BuildResult:
    """The run's :class:`BuildResult`, from its report."""
    return BuildResult(
        run_id=report.run_id,
        template_name=report.template_name,
        last_run_status=report.status(),
        run_outputs={name: outcome.run_output() for name, outcome in report.outputs.items()},
        source_exact_version=report.source_exact_version,
        staging_directory=staging.directory,
    )


def _output_detail(outcome: TargetOutcome) -> dict[str, Any]:
    return {
        **outcome.run_output().to_dict(),
        "type": outcome.type,
        "error": outcome.error,
        "regions": dict(outcome.regions),
    }


def _record(
    result: BuildResult, report: RunReport, staging: Staging, group: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``run.json``: the ``--json`` result plus per-region outputs, step timings, phases and warnings."""
    data = result.to_dict()
    data["details"] = {
        "templateDigest": report.template_digest,
        "runDirectory": str(staging.run_directory),
        "durationSeconds": report.duration_seconds,
        "outputs": {name: _output_detail(outcome) for name, outcome in report.outputs.items()},
        "phases": dict(report.phases),
        "steps": [step_entry(step) for step in report.steps],
        "warnings": list(report.warnings),
        "keptVm": report.kept_vm,
        "optimization": dict(report.optimization) or None,
        "cache": dict(report.cache) if report.cache is not None else None,
        **(group or {}),
    }
    return data
