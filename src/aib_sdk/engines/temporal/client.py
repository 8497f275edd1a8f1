"""Submitting builds: ``TemporalEngine(settings).submit(template, options)`` → :class:`RemoteRun`.

```python
run = await TemporalEngine(TemporalSettings(address="temporal:7233")).submit("web.json", BuildOptions())
async for event in run.events():      # the same typed events as a local build, a fraction of a second late
    ...
result = await run.result()            # the same BuildResult
await run.cancel()                     # → Canceled; the worker cleans up
```
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aib_sdk.artifacts import RunOutput
from aib_sdk.errors import AibError, UsageError
from aib_sdk.events import EVENT_ADAPTER, Event
from aib_sdk.options import BuildOptions
from aib_sdk.result import BuildResult, LastRunStatus

from .settings import TemporalSettings
from .workflow import WORKFLOW_NAME

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHandle

    from aib_sdk.builder.plan import TemplateInput

POLL_SECONDS = 0.3
CLOSED_QUERY_SECONDS = 5.0
"""How long a closed run's last events are asked of a worker before they are read from the history instead."""
_STATUS_STATES = {
    "RUNNING": "Running",
    "CANCELED": "Canceled",
    "FAILED": "Failed",
    "TERMINATED": "Failed",
    "TIMED_OUT": "Failed",
}
"""AIB run state of a workflow that recorded none (from the workflow's own status)."""
FINAL_STATES = ("Succeeded", "PartiallySucceeded", "Failed", "Canceled")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def result_from_json(data: Mapping[str, Any]) -> BuildResult:
    """Rebuild a :class:`BuildResult` from its ``to_dict()`` form."""
    status = data.get("lastRunStatus") or {}
    outputs = {
        name: RunOutput(
            run_output_name=name,
            artifact_id=out.get("artifactId"),
            artifact_uri=out.get("artifactUri"),
            provisioning_state=out.get("provisioningState", "Succeeded"),
            error=out.get("error"),
        )
        for name, out in (data.get("runOutputs") or {}).items()
    }
    staging = data.get("stagingDirectory")
    return BuildResult(
        run_id=str(data.get("runId", "")),
        template_name=str(data.get("templateName", "")),
        last_run_status=LastRunStatus(
            run_state=status.get("runState", "Failed"),
            run_sub_state=status.get("runSubState", "Queued"),
            message=status.get("message", ""),
            start_time=_time(status.get("startTime")),
            end_time=_time(status.get("endTime")),
        ),
        run_outputs=outputs,
        source_exact_version=(data.get("source") or {}).get("exactVersion"),
        staging_directory=Path(staging) if staging else None,
    )


class RemoteRun:
    """A build running on the cluster (its workflow id is the run id)."""

    def __init__(self, handle: WorkflowHandle[Any, Any]) -> None:
        self.handle = handle
        self._result: BuildResult | None = None
        self.task_queue: str | None = None
        """The capability queue the build waits on (set by :meth:`TemporalEngine.submit`)."""
        self.needs: list[str] = []

    @property
    def run_id(self) -> str:
        return self.handle.id

    async def progress(self, since: int = 0) -> dict[str, Any]:
        """The workflow's state: ``events`` after ``since``, ``next``, ``state``, ``attempts`` and ``result``."""
        data: dict[str, Any] = await self.handle.query("progress", since)
        return data

    async def snapshot(self) -> dict[str, Any]:
        """:meth:`progress` from the start; for a closed run (or when no worker answers), the same rebuilt from the
        workflow's history (its signals and result), so finished runs show without a running worker."""
        from temporalio.service import RPCError

        if await self._closed():
            return await self._from_history()
        try:
            return await self.progress(0)
        except RPCError:
            return await self._from_history()

    async def _from_history(self) -> dict[str, Any]:
        from temporalio.api.enums.v1 import EventType

        converter = self.handle._client.data_converter
        data: dict[str, Any] = {"events": [], "attempts": [], "result": None, "state": {}}
        async for item in self.handle.fetch_history_events():
            if item.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                attrs = item.workflow_execution_signaled_event_attributes
                (value,) = await converter.decode(attrs.input.payloads) if attrs.input.payloads else (None,)
                if attrs.signal_name == "events" and isinstance(value, list):
                    data["events"].extend(value)
                elif attrs.signal_name == "attempt":
                    data["attempts"].append(value)
                elif attrs.signal_name == "finished":
                    data["result"] = value
            elif item.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                payloads = item.workflow_execution_completed_event_attributes.result.payloads
                if payloads:
                    (data["result"],) = await converter.decode(payloads)
        status = (data["result"] or {}).get("lastRunStatus") or {}
        state = {"runState": "Running", "runSubState": "Queued"}
        for event in data["events"]:
            if event.get("kind") in ("phase", "run-finished"):
                state = {"runState": event["run_state"], "runSubState": event["run_sub_state"]}
        data["state"] = {**state, **{k: status[k] for k in ("runState", "runSubState") if k in status}}
        data["next"] = len(data["events"])
        return data

    async def events(self, *, poll: float = POLL_SECONDS) -> AsyncIterator[Event]:
        """Every event of the run, earlier ones first, until the workflow has closed."""
        from temporalio.service import RPCError

        cursor = 0
        if await self._closed():  # a finished run: its history holds everything, no worker needed
            for raw in (await self._from_history())["events"]:
                yield EVENT_ADAPTER.validate_python(raw)
            return
        while True:
            try:
                data = await self.progress(cursor)
            except RPCError:  # no worker has run the workflow yet (queries need one), or it is gone
                if await self._closed():
                    for raw in await self._events_after(cursor):
                        yield EVENT_ADAPTER.validate_python(raw)
                    return
                await asyncio.sleep(poll)
                continue
            cursor = int(data["next"])
            for raw in data["events"]:
                yield EVENT_ADAPTER.validate_python(raw)
            final = data.get("result") is not None or data["state"].get("runState") in FINAL_STATES
            if final and await self._closed():  # the workflow sets its result just before it closes
                for raw in await self._events_after(cursor):
                    yield EVENT_ADAPTER.validate_python(raw)
                return
            await asyncio.sleep(poll)

    async def _events_after(self, cursor: int) -> list[dict[str, Any]]:
        """The events after ``cursor`` of a closed run: from a worker when one answers, else from the history (a
        closed workflow's query needs a worker, and the last one may have stopped)."""
        from temporalio.service import RPCError

        try:
            data = await self.handle.query("progress", cursor, rpc_timeout=timedelta(seconds=CLOSED_QUERY_SECONDS))
            events: list[dict[str, Any]] = data["events"]
        except (RPCError, TimeoutError):
            events = (await self._from_history())["events"][cursor:]
        return events

    async def _closed(self) -> bool:
        description = await self.handle.describe()
        return description.close_time is not None

    async def result(self) -> BuildResult:
        """The run's :class:`BuildResult` once the workflow has closed (Canceled when it was cancelled)."""
        if self._result is not None:
            return self._result
        from temporalio.client import WorkflowFailureError
        from temporalio.exceptions import ApplicationError, CancelledError

        try:
            data = await self.handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
            if isinstance(cause, CancelledError):
                data = (await self._from_history()).get("result") or {
                    "runId": self.run_id,
                    "lastRunStatus": {"runState": "Canceled", "message": "the build was canceled"},
                }
            elif isinstance(cause, ApplicationError) and cause.type in ("TemplateError", "UsageError"):
                raise UsageError(f"the worker refused the build: {cause.message}") from None
            else:
                raise AibError(f"remote run {self.run_id} failed: {cause or exc}") from None
        self._result = result_from_json(data)
        return self._result

    async def cancel(self) -> None:
        """Ask the cluster to cancel the run (the worker cancels the Builder, which cleans everything up)."""
        await self.handle.cancel()


class TemporalEngine:
    """Runs builds on a Temporal cluster's ``aib worker`` processes."""

    def __init__(self, settings: TemporalSettings, client: Client | None = None) -> None:
        self.settings = settings
        self._client = client

    async def client(self) -> Client:
        if self._client is None:
            self._client = await self.settings.connect()
        return self._client

    async def submit(self, template: TemplateInput, options: BuildOptions | None = None) -> RemoteRun:
        """Plan the build locally, upload its local inputs, and start its workflow; return at once."""
        from .request import make_request

        request, _ = await make_request(template, options or BuildOptions(), self.settings)
        client = await self.client()
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            request,
            id=request["runId"],
            task_queue=self.settings.task_queue,
            memo={"templateName": request["templateName"], "needs": request["needs"]},
        )
        run = RemoteRun(handle)
        run.task_queue, run.needs = request["activityQueue"], list(request["needs"])
        return run

    async def pollers(self, task_queue: str, *, workflows: bool = False) -> int:
        """How many workers poll ``task_queue`` for builds (or, with ``workflows``, for workflow tasks) right now."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        client = await self.client()
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
                if workflows
                else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        return len(response.pollers)

    async def run(self, run_id: str) -> RemoteRun:
        """A handle on an existing run."""
        client = await self.client()
        return RemoteRun(client.get_workflow_handle(run_id))

    async def list_runs(self, template: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Recent runs, newest first: run id, template, Temporal status, AIB run state, start and close time."""
        client = await self.client()
        rows: list[dict[str, Any]] = []
        async for wf in client.list_workflows(f"WorkflowType = '{WORKFLOW_NAME}'", limit=limit):
            memo = await wf.memo()
            name = memo.get("templateName")
            if template and name != template:
                continue
            rows.append(
                {
                    "runId": wf.id,
                    "templateName": name,
                    "status": wf.status.name if wf.status else None,
                    "runState": memo.get("runState") or _STATUS_STATES.get(wf.status.name if wf.status else "", "-"),
                    "runSubState": memo.get("runSubState", "Queued"),
                    "startTime": wf.start_time.isoformat() if wf.start_time else None,
                    "endTime": wf.close_time.isoformat() if wf.close_time else None,
                }
            )
        return rows
