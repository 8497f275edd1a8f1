"""The build workflow: one per build. It schedules the build activity on the task queue of the providers the build
needs, keeps AIB's run state and the event stream the activity pushes (signal ``events``), records every attempt,
and answers the submitter's ``progress`` query. When the build reaches its targets, the activity asks (signal
``distribute``) for one ``aib-publish-target`` activity per target on its worker's own queue; they run
concurrently, each with its own retries (see :mod:`.targets`). Cancelling the workflow cancels the activity and
waits for its cleanup. Deterministic: only the standard library and temporalio are imported here.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

WORKFLOW_NAME = "AibBuild"
ACTIVITY_NAME = "aib-build"
PUBLISH_ACTIVITY = "aib-publish-target"
TARGET_FAILED = "TargetFailed"
NO_SUCH_BUILD = "NoSuchBuild"
"""A target activity reached a worker that no longer holds that build attempt (it ended or the worker restarted)."""
NON_RETRYABLE = ["TemplateError", "UsageError"]
WORKER_FULL = "WorkerFull"
"""The error type of a build handed back unstarted by a worker with no free slot: queued again, no attempt used."""
REQUEUE_SECONDS = 0.5
TIMEOUT_MARGIN = 600.0
"""Seconds an attempt may run past the build timeout (input copies, cleanup) before Temporal stops it."""


def _failed_result(request: dict[str, Any], state: dict[str, Any], message: str, run_state: str) -> dict[str, Any]:
    return {
        "runId": request["runId"],
        "templateName": request["templateName"],
        "lastRunStatus": {
            "runState": run_state,
            "runSubState": state.get("runSubState", "Queued"),
            "message": message,
            "startTime": state.get("startTime"),
            "endTime": state.get("endTime"),
        },
        "runOutputs": {},
        "source": {"exactVersion": None},
        "stagingDirectory": None,
    }


@workflow.defn(name=WORKFLOW_NAME)
class BuildWorkflow:
    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._state: dict[str, Any] = {"runState": "Running", "runSubState": "Queued"}
        self._attempts: list[dict[str, Any]] = []
        self._result: dict[str, Any] | None = None
        self._request: dict[str, Any] = {}
        self._targets: list[asyncio.Task[None]] = []

    @workflow.run
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        self._request = request
        try:
            result = await self._build(request)
        except (ActivityError, asyncio.CancelledError) as exc:
            cause = exc.cause if isinstance(exc, ActivityError) else exc
            if isinstance(cause, CancelledError | asyncio.CancelledError):
                self._state["runState"] = "Canceled"
                self._publish_state()
                if self._result is None:
                    self._result = _failed_result(request, self._state, "the build was canceled", "Canceled")
                raise
            if isinstance(cause, ApplicationError) and cause.type in NON_RETRYABLE:
                self._state["runState"] = "Failed"
                self._publish_state()
                raise ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True) from None
            message = f"the build could not finish on any worker ({len(self._attempts)} attempt(s)): {cause}"
            self._state["runState"] = "Failed"
            result = _failed_result(request, self._state, message, "Failed")
        self._result = result
        self._state["runState"] = result["lastRunStatus"]["runState"]
        self._publish_state()
        return result

    async def _build(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run the build activity until it ends; a build handed back by a full worker before it started is queued
        again (after :data:`REQUEUE_SECONDS`) with the attempts and time it has left."""
        timeout = float(request["timeout"]) + TIMEOUT_MARGIN
        attempts = int(request.get("maxAttempts", 3))
        deadline = workflow.now() + timedelta(seconds=timeout * attempts + float(request.get("queueTimeout", 0)))
        while True:
            try:
                result: dict[str, Any] = await workflow.execute_activity(
                    ACTIVITY_NAME,
                    {**request, "attemptsBefore": len(self._attempts)},
                    task_queue=request["activityQueue"],
                    start_to_close_timeout=timedelta(seconds=timeout),
                    schedule_to_close_timeout=max(deadline - workflow.now(), timedelta(seconds=1)),
                    heartbeat_timeout=timedelta(seconds=float(request["heartbeatTimeout"])),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=1),
                        maximum_interval=timedelta(seconds=30),
                        maximum_attempts=max(1, attempts - len(self._attempts)),
                        non_retryable_error_types=[*NON_RETRYABLE, WORKER_FULL],
                    ),
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                return result
            except ActivityError as exc:
                if not (isinstance(exc.cause, ApplicationError) and exc.cause.type == WORKER_FULL):
                    raise
            finally:
                await self._stop_targets()
            await workflow.sleep(REQUEUE_SECONDS)

    async def _publish_target(self, queue: str, attempt: int, name: str) -> None:
        """One target's activity, retried on its own; its outcome reaches the build activity on its worker."""
        request = self._request
        attempts = int(request.get("maxAttempts", 3))
        with contextlib.suppress(ActivityError):
            await workflow.execute_activity(
                PUBLISH_ACTIVITY,
                {"runId": request["runId"], "attempt": attempt, "target": name, "maxAttempts": attempts},
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=float(request["timeout"]) + TIMEOUT_MARGIN),
                heartbeat_timeout=timedelta(seconds=float(request["heartbeatTimeout"])),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=attempts,
                    non_retryable_error_types=[NO_SUCH_BUILD],
                ),
                cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
            )

    async def _stop_targets(self) -> None:
        """The build attempt ended: cancel its target activities still going (e.g. on a worker that died)."""
        targets, self._targets = self._targets, []
        for task in targets:
            task.cancel()
        await asyncio.gather(*targets, return_exceptions=True)

    def _publish_state(self) -> None:
        """Keep the run state in the workflow's memo, so ``aib runs --temporal`` lists it without a query."""
        workflow.upsert_memo({"runState": self._state["runState"], "runSubState": self._state["runSubState"]})

    @workflow.signal(name="events")
    def add_events(self, batch: list[dict[str, Any]]) -> None:
        before = (self._state["runState"], self._state["runSubState"])
        for event in batch:
            kind = event.get("kind")
            if kind in ("phase", "run-finished"):
                self._state["runState"] = event["run_state"]
                self._state["runSubState"] = event["run_sub_state"]
            elif kind == "run-started":
                self._state["startTime"] = event.get("time")
            if kind == "run-finished":
                self._state["endTime"] = event.get("time")
        self._events.extend(batch)
        if (self._state["runState"], self._state["runSubState"]) != before:
            self._publish_state()

    @workflow.signal(name="distribute")
    def distribute(self, data: dict[str, Any]) -> None:
        for name in data["targets"]:
            self._targets.append(asyncio.create_task(self._publish_target(data["queue"], data["attempt"], name)))

    @workflow.signal(name="attempt")
    def add_attempt(self, attempt: dict[str, Any]) -> None:
        self._attempts.append(attempt)

    @workflow.signal(name="finished")
    def set_finished(self, result: dict[str, Any]) -> None:
        self._result = result

    @workflow.query(name="progress")
    def progress(self, since: int = 0) -> dict[str, Any]:
        return {
            "events": self._events[since:],
            "next": len(self._events),
            "state": self._state,
            "attempts": self._attempts,
            "result": self._result,
        }
