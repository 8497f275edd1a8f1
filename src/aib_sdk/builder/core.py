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

from aib_sdk.artifacts import RunOutput
from aib_sdk.context import RunContext, Staging
from aib_sdk.errors import UsageError
from aib_sdk.eventlog import write_log
from aib_sdk.events import Event, PhaseChanged, Progress, StepFinished, StepStarted, TargetStatus, Warning
from aib_sdk.fetch import UriFetcher
from aib_sdk.journal import Journal
from aib_sdk.options import BuildOptions
from aib_sdk.result import BuildResult
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

from .execution import CLEANUP_TIMEOUT, Execution
from .hub import EventHub
from .plan import Plan, TemplateInput, make_plan


class Builder:
    """Builds one image template: ``await Builder(template, options=...).run()`` → :class:`BuildResult`.

    ``template`` is a JSON file path, a parsed document (any AIB form) or a ``LoadedTemplate``.
    """

    def __init__(self, template: TemplateInput, *, options: BuildOptions | None = None) -> None:
        self.template = template
        self.options = options or BuildOptions()
        self._hub = EventHub(self.options.on_event)
        self._execution: Execution | None = None
        self._cancel_requested = False
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
        self._cancel_requested = True
        if self._execution is not None:
            self._execution.request_cancel()
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
        emit = self._hub.emit
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
                scratch=staging.work,
                context=plan.context,
            ),
            plugins=plan.plugins,
            journal=journal,
        )
        execution = self._execution = Execution(plan, ctx, emit)
        if resumed is not None:
            execution.resume = (resumed.run_id, resumed.data)
        steps: list[dict[str, Any]] = []
        warnings: list[str] = []
        self._hub.listen(lambda ev: _note(ev, steps, warnings))
        if self._cancel_requested:
            execution.cancel_requested = True
        log_events = self._hub.subscribe()
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_log, log_events, staging.log_file)
            try:
                notes = [f"{w.path}: {w.message}" if w.path else w.message for w in plan.loaded.warnings]
                await execution.execute(notes)
            finally:
                with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    execution.run_finished()
                    self._hub.close()
                    self.result = execution.result(staging.directory)
                    if execution.kept_vm is None:
                        await remove_work(staging)
                        await journal.release(work_entry)
                    await write_record(staging, _record(self.result, execution, steps, warnings, group))
        assert self.result is not None
        return self.result


async def _new_staging(plan: Plan, run_id: str | None = None) -> Staging:
    """The staging directories of a new run, under a run id no other run has (retried on a collision).

    A run id the caller chose (a remote engine's) is used as it is.
    """
    if run_id:
        return await create_staging(plan.config, plan.name, plan.digest, run_id)
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


def _note(event: Event, steps: list[dict[str, Any]], warnings: list[str]) -> None:
    if isinstance(event, StepFinished):
        steps.append(
            {
                "phase": event.phase,
                "index": event.index,
                "name": event.name,
                "type": event.type,
                "ok": event.ok,
                "duration": round(event.duration, 3),
                "exitCode": event.exit_code,
                "error": event.error,
                "cached": event.cached,
                "layer": event.layer,
            }
        )
    elif isinstance(event, Warning):
        warnings.append(event.message)


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


def _output_detail(output: RunOutput, type_name: str | None) -> dict[str, Any]:
    return {
        **output.to_json(),
        "type": type_name,
        "error": output.error,
        "regions": dict(output.regions),
    }


def _record(
    result: BuildResult,
    execution: Execution,
    steps: list[dict[str, Any]],
    warnings: list[str],
    group: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run.json``: the ``--json`` result plus per-region outputs, step timings, phases and warnings."""
    data = result.to_json()
    start = execution.status.start_time
    end = execution.status.end_time
    data["details"] = {
        "templateDigest": execution.ctx.template_digest,
        "runDirectory": str(execution.ctx.staging.run_directory),
        "durationSeconds": round((end - start).total_seconds(), 3) if start and end else None,
        "outputs": {
            name: _output_detail(out, execution.output_types.get(name)) for name, out in result.run_outputs.items()
        },
        "phases": execution.phase_durations(),
        "steps": steps,
        "warnings": warnings,
        "keptVm": execution.kept_vm,
        "optimization": execution.optimization or None,
        "cache": execution.cache.report() if execution.cache is not None else None,
        **(group or {}),
    }
    return data
