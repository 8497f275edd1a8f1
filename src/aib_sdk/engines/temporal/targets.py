"""Distribution targets as their own retryable activities.

The build activity keeps the captured artifact and the Builder run on its worker; when the run reaches
Distributing, its :class:`TargetPublisher` (the run's ``BuildOptions.publisher``) asks the workflow (signal
``distribute``) to run one ``aib-publish-target`` activity per target, concurrently, on this worker's own task
queue, each retried on its own. The target activities publish through the waiting run (its context and events),
so run states, events and the final verdict (``PartiallySucceeded`` when some targets fail) stay the Builder's.
The build activity keeps heartbeating while they run; if its worker dies the whole build is retried elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError

from aib_sdk.artifacts import Artifact
from aib_sdk.builder.distribution import publish_target
from aib_sdk.builder.plan import TargetPlan
from aib_sdk.builder.report import TargetOutcome
from aib_sdk.context import RunContext

from .workflow import NO_SUCH_BUILD, PUBLISH_ACTIVITY, TARGET_FAILED

HEARTBEAT_SECONDS = 1.0


def worker_queue(base: str, identity: str) -> str:
    """The task queue only this worker polls: its builds' target activities."""
    return f"{base}/worker/{identity}"


@dataclass
class WaitingRun:
    """A build attempt of this worker waiting on its targets' activities."""

    attempt: int
    artifact: Artifact
    targets: dict[str, TargetPlan]
    ctx: RunContext
    limiter: asyncio.Semaphore
    outcomes: dict[str, TargetOutcome] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, outcome: TargetOutcome) -> None:
        self.outcomes[outcome.run_output_name] = outcome
        if set(self.outcomes) >= set(self.targets):
            self.done.set()


class TargetActivities:
    """The runs of this worker waiting on target activities (by run id), and the target activity."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.waiting: dict[str, WaitingRun] = {}

    def publisher(self, handle: WorkflowHandle[Any, Any], attempt: int) -> TargetPublisher:
        return TargetPublisher(self, handle, attempt)

    @activity.defn(name=PUBLISH_ACTIVITY)
    async def publish(self, request: dict[str, Any]) -> dict[str, Any]:
        """Publish one target of a waiting run; a failed publish is retried (error ``TargetFailed``) until the
        last attempt, whose outcome (also a failure or a timeout) is the target's."""
        run = self.waiting.get(request["runId"])
        if run is None or run.attempt != request["attempt"]:
            raise ApplicationError(
                f"this worker no longer holds attempt {request['attempt']} of run {request['runId']}",
                type=NO_SUCH_BUILD,
                non_retryable=True,
            )
        target = run.targets[request["target"]]
        last = activity.info().attempt >= int(request["maxAttempts"])
        task = asyncio.current_task()
        assert task is not None
        run.tasks.add(task)
        beat = asyncio.create_task(_heartbeat())
        try:
            async with run.limiter:
                outcome = await publish_target(run.artifact, target, run.ctx)
        except asyncio.CancelledError:
            if last:
                run.record(TargetOutcome(target.run_output_name, target.type_name, "Canceled", error="canceled"))
            raise
        finally:
            run.tasks.discard(task)
            beat.cancel()
        if outcome.state != "Succeeded" and not last:
            raise ApplicationError(f"{target.run_output_name}: {outcome.error}", type=TARGET_FAILED)
        run.record(outcome)
        return {"target": target.run_output_name, "state": outcome.state, "error": outcome.error}


async def _heartbeat() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_SECONDS)


@dataclass
class TargetPublisher:
    """One build attempt's ``BuildOptions.publisher``: hands the targets to the workflow and waits for them."""

    activities: TargetActivities
    handle: WorkflowHandle[Any, Any]
    attempt: int

    async def __call__(
        self, artifact: Artifact, targets: Sequence[TargetPlan], ctx: RunContext
    ) -> Mapping[str, TargetOutcome]:
        if not targets:
            return {}
        run = WaitingRun(
            attempt=self.attempt,
            artifact=artifact,
            targets={t.run_output_name: t for t in targets},
            ctx=ctx,
            limiter=asyncio.Semaphore(max(1, ctx.options.max_parallel_targets)),
        )
        self.activities.waiting[ctx.run_id] = run
        try:
            await self.handle.signal(
                "distribute",
                {"queue": self.activities.queue, "attempt": self.attempt, "targets": list(run.targets)},
            )
            await run.done.wait()
            return dict(run.outcomes)
        finally:
            del self.activities.waiting[ctx.run_id]
            for task in list(run.tasks):  # the run ended first (cancelled, timed out): stop its publishes
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*run.tasks, return_exceptions=True)
