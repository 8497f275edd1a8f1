"""Distribution: check the targets before anything is built, publish a captured artifact to every target.

Two entry points an engine can use on their own:

- :func:`publish_target` publishes one artifact to one :class:`~aib_sdk.builder.plan.TargetPlan` with a run's
  context, announcing the target's states (``Running`` → ``Succeeded``/``Failed``; ``Canceled`` when cancelled, then
  re-raised) and returning its :class:`~aib_sdk.builder.report.TargetOutcome`.
- :class:`Distribution` does it for a run's targets: :meth:`~Distribution.preflight` (before any VM boots) and
  :meth:`~Distribution.publish` (every target concurrently under ``max_parallel_targets``); its
  :attr:`~Distribution.outcomes` hold every target's final state, also after a cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from aib_sdk.artifacts import Artifact, DiskImage, ProvisioningState
from aib_sdk.context import RunContext
from aib_sdk.errors import DistributeError, StepError
from aib_sdk.events import RunState

from .describe import describe
from .plan import TargetPlan
from .report import TargetOutcome


async def publish_target(artifact: Artifact, target: TargetPlan, ctx: RunContext) -> TargetOutcome:
    """Publish ``artifact`` to ``target``; a failure is a ``Failed`` outcome, a cancellation is announced and
    re-raised."""
    name, type_name = target.run_output_name, target.type_name
    ctx.target_status(name, type_name, "Running")
    try:
        output = await target.distributor().publish(artifact, target.spec, ctx)
    except Exception as exc:
        message = describe(exc)
        ctx.target_status(name, type_name, "Failed", message=message)
        return TargetOutcome(name, type_name, "Failed", error=message)
    except BaseException:
        ctx.target_status(name, type_name, "Canceled")
        raise
    state: ProvisioningState = "Failed" if output.provisioning_state == "Failed" else "Succeeded"
    ctx.target_status(
        name,
        type_name,
        state,
        message=output.error or "",
        artifact_id=output.artifact_id,
        artifact_uri=output.artifact_uri,
    )
    return TargetOutcome(
        name,
        type_name,
        state,
        artifact_id=output.artifact_id,
        artifact_uri=output.artifact_uri,
        error=output.error,
        regions=dict(output.regions),
    )


class Distribution:
    """The targets of one run and their outcomes."""

    def __init__(self, targets: Sequence[TargetPlan], ctx: RunContext) -> None:
        self.targets = list(targets)
        self.ctx = ctx
        self.outcomes: dict[str, TargetOutcome] = {}

    async def preflight(self, image: DiskImage) -> None:
        """Ask each target that can (optional ``Distributor.preflight``) whether it will accept the image, before any
        VM boots: a missing gallery definition fails the run in seconds, as AIB refuses such a template at
        submission. Raises :class:`DistributeError` naming every refusal (each also a ``Failed`` outcome)."""
        targets = [t for t in self.targets if callable(getattr(t.distributor, "preflight", None))]
        refused: list[str] = []

        async def check(target: TargetPlan) -> None:
            try:
                await target.distributor().preflight(target.spec, image, self.ctx)  # type: ignore[attr-defined]
            except Exception as exc:
                name, message = target.run_output_name, describe(exc)
                refused.append(f"{name}: {message}")
                self.outcomes[name] = TargetOutcome(name, target.type_name, "Failed", error=message)
                self.ctx.target_status(name, target.type_name, "Failed", message=message)

        async with anyio.create_task_group() as tg:
            for target in targets:
                tg.start_soon(check, target)
        if refused:
            summary = "; ".join(refused)
            raise DistributeError(f"{len(refused)} target(s) cannot be published, nothing was built: {summary}")

    def preflight_count(self) -> int:
        """How many targets :meth:`preflight` asks."""
        return sum(1 for t in self.targets if callable(getattr(t.distributor, "preflight", None)))

    async def publish(self, artifact: Artifact) -> None:
        """Publish to every target at once (at most ``max_parallel_targets`` together), or through the options'
        ``publisher``. When cancelled, targets that had not finished end ``Canceled`` (those never started without
        an error)."""
        limiter = anyio.CapacityLimiter(max(1, self.ctx.options.max_parallel_targets))
        for target in self.targets:
            self.outcomes[target.run_output_name] = TargetOutcome(target.run_output_name, target.type_name, "Running")

        async def one(target: TargetPlan) -> None:
            async with limiter:
                try:
                    self.outcomes[target.run_output_name] = await publish_target(artifact, target, self.ctx)
                except BaseException:
                    self._cancel(target, error="canceled")
                    raise

        try:
            if self.ctx.options.publisher is not None:  # an engine's own way (e.g. one activity per target)
                outcomes = await self.ctx.options.publisher(artifact, self.targets, self.ctx)
                self.outcomes.update(
                    (t.run_output_name, outcomes[t.run_output_name])
                    for t in self.targets
                    if t.run_output_name in outcomes
                )
            else:
                async with anyio.create_task_group() as tg:
                    for target in self.targets:
                        tg.start_soon(one, target)
        finally:
            for target in self.targets:
                if self.outcomes[target.run_output_name].state == "Running":
                    self._cancel(target, error=None)

    def _cancel(self, target: TargetPlan, *, error: str | None) -> None:
        self.outcomes[target.run_output_name] = TargetOutcome(
            target.run_output_name, target.type_name, "Canceled", error=error
        )

    def verdict(self, validation_error: StepError | None) -> tuple[RunState, str]:
        """The run's final state and message after :meth:`publish` (a failed validation fails the run)."""
        failed = [o for o in self.outcomes.values() if o.state != "Succeeded"]
        total = len(self.targets)
        summary = "; ".join(f"{o.run_output_name}: {o.error}" for o in failed)
        if validation_error is not None:
            message = f"validation failed: {validation_error}"
            if failed:
                message += f"\ndistribution failed for {len(failed)} of {total} target(s): {summary}"
            return "Failed", message
        if not failed:
            return "Succeeded", ""
        if len(failed) < total:
            return "PartiallySucceeded", f"{len(failed)} of {total} target(s) failed: {summary}"
        return "Failed", f"distribution failed for every target: {summary}"
