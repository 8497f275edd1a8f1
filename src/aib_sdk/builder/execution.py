"""One run of a :class:`~aib_sdk.builder.plan.Plan` with AIB's semantics.

Queued → Building (resolve the source, boot the build VM) → Customizing (each step in order, its own session,
then the hidden deprovision step; shutdown and capture) → Validating (``inVMValidations``) → Distributing (every
target concurrently under ``max_parallel_targets``). ``errorHandling`` (cleanup|abort), ``continueDistributeOnFailure``,
``sourceValidationOnly``, the build timeout and cancellation are honoured here; the build VM's life is in
:mod:`.machine`, publishing in :mod:`.distribution`. :meth:`Execution.execute` returns the run's immutable
:class:`~aib_sdk.builder.report.RunReport`.

As in AIB, validation runs on a separate validation VM booted from the captured (deprovisioned) image, so it
checks the image that will be published; ``sourceValidationOnly`` boots the source itself instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel

from aib_sdk.artifacts import Artifact, DiskImage
from aib_sdk.cache.session import StepCache, host_facts
from aib_sdk.context import RunContext, StepContext
from aib_sdk.errors import StepError
from aib_sdk.events import (
    PhaseChanged,
    RunFinished,
    RunStarted,
    RunState,
    RunSubState,
    StepFinished,
    StepPhase,
    StepStarted,
    WarningEvent,
)
from aib_sdk.plugins.registry import type_name_of
from aib_sdk.protocols import Customizer, Machine, VmRequest
from aib_sdk.redaction import redact_text
from aib_sdk.result import TIMEOUT_MESSAGE
from aib_sdk.runtime import first_error

from .cancellation import Cancellation
from .describe import describe
from .distribution import Distribution
from .machine import keep_machine, on_machine, vm_extra, vm_request
from .plan import Plan, StepPlan
from .report import RunRecorder, RunReport, frozen_mapping

T = TypeVar("T")

DEPROVISION_TYPE = "Deprovision"


def _now() -> datetime:
    return datetime.now(UTC)


def _step_name(spec: BaseModel, type_name: str, index: int) -> str:
    name = getattr(spec, "name", None)
    return name if isinstance(name, str) and name else f"{type_name}-{index + 1}"


class Execution:
    """The mutable state of one run and the phases that move it; :meth:`execute` returns its report.

    Every event goes through ``recorder`` (the sink of ``ctx``), which keeps the warnings and step records.
    """

    def __init__(
        self,
        plan: Plan,
        ctx: RunContext,
        recorder: RunRecorder,
        *,
        cancellation: Cancellation | None = None,
        resume: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        self.plan = plan
        self.ctx = ctx
        self.emit = recorder.emit
        self._recorder = recorder
        self.cancellation = cancellation or Cancellation()
        self.resume = resume
        """``--resume``: the run id and run.json of the run being resumed."""
        self.run_state: RunState = "Running"
        self.run_sub_state: RunSubState = "Queued"
        self.message = ""
        self.start_time: datetime | None = None
        self.end_time: datetime | None = None
        self.distribution = Distribution(plan.targets, ctx)
        self.exact_version: str | None = None
        self.kept_vm: str | None = None
        self.activity = "queued"
        self.phase_times: dict[str, float] = {}
        self.optimization: dict[str, float] = {}
        self._boot_started = 0.0
        self._finished_state = False
        self._end_mark: float | None = None
        self.cache: StepCache | None = None
        self._report: RunReport | None = None

    # State -------------------------------------------------------------------------------------------------

    def warn(self, message: str) -> None:
        self.emit(WarningEvent(message=message))

    def phase(self, sub_state: RunSubState, run_state: RunState = "Running") -> None:
        self.run_sub_state = sub_state
        self.run_state = run_state
        self.phase_times.setdefault(sub_state, anyio.current_time())
        self.emit(PhaseChanged(run_state=run_state, run_sub_state=sub_state))

    def finish(self, state: RunState, message: str) -> None:
        """Set the final state (the first call wins)."""
        if self._finished_state:
            return
        self._finished_state = True
        self.run_state = state
        self.message = redact_text(message)

    def fail(self, message: str) -> None:
        self.finish("Failed", message)

    def _canceling(self) -> None:
        """A cancellation was requested while the run is going: announce ``Canceling``."""
        if not self._finished_state and self.run_state == "Running":
            self.phase(self.run_sub_state, "Canceling")

    def phase_durations(self) -> dict[str, float]:
        """Seconds spent in each run sub-state, in order."""
        marks = sorted(self.phase_times.items(), key=lambda kv: kv[1])
        end = self._end_mark if self._end_mark is not None else anyio.current_time()
        return {
            name: round((marks[i + 1][1] if i + 1 < len(marks) else end) - start, 3)
            for i, (name, start) in enumerate(marks)
        }

    @property
    def report(self) -> RunReport:
        """The run's report, once :meth:`execute` has ended (also when it re-raised the caller's cancellation)."""
        if self._report is None:
            raise RuntimeError("the run has not ended")
        return self._report

    def _end(self) -> RunReport:
        """Announce the end (``RunFinished``) and freeze what the run produced into its report."""
        self._end_mark = anyio.current_time()
        self.end_time = self.end_time or _now()
        self.emit(RunFinished(run_state=self.run_state, run_sub_state=self.run_sub_state, message=self.message))
        ctx = self.ctx
        return RunReport(
            run_id=ctx.run_id,
            template_name=ctx.template_name,
            template_digest=ctx.template_digest,
            run_state=self.run_state,
            run_sub_state=self.run_sub_state,
            message=self.message,
            start_time=self.start_time,
            end_time=self.end_time,
            source_exact_version=self.exact_version,
            steps=tuple(self._recorder.steps),
            outputs=frozen_mapping(self.distribution.outcomes),
            kept_vm=self.kept_vm,
            warnings=tuple(self._recorder.warnings),
            phases=frozen_mapping(self.phase_durations()),
            optimization=frozen_mapping(self.optimization),
            cache=frozen_mapping(self.cache.report()) if self.cache is not None else None,
        )

    # The run -----------------------------------------------------------------------------------------------

    async def execute(self, warnings: Sequence[str] = ()) -> RunReport:
        """Run to a final state and return the report. The caller's cancellation is re-raised after recording
        ``Canceled`` (the report is then :attr:`report`)."""
        try:
            await self._execute(warnings)
        finally:
            self._report = self._end()
        return self._report

    async def _execute(self, warnings: Sequence[str]) -> None:
        self.start_time = _now()
        self.emit(
            RunStarted(
                run_id=self.ctx.run_id,
                template_name=self.ctx.template_name,
                staging_directory=str(self.ctx.staging.directory),
            )
        )
        for warning in warnings:
            self.warn(warning)
        self.phase("Queued")
        try:
            with anyio.CancelScope() as scope:
                self.cancellation.attach(scope, self._canceling)
                with anyio.move_on_after(self.plan.timeout) as deadline:
                    await self._pipeline()
                if deadline.cancelled_caught:
                    self.fail(
                        f"{TIMEOUT_MESSAGE} after {self.plan.timeout_text} during {self.run_sub_state} "
                        f"({self.activity}); everything it started was cleaned up"
                    )
            if scope.cancelled_caught:
                self.finish("Canceled", f"the build was canceled during {self.run_sub_state} ({self.activity})")
        except anyio.get_cancelled_exc_class():
            self.finish("Canceled", f"the build was canceled during {self.run_sub_state} ({self.activity})")
            raise
        finally:
            self.end_time = _now()
            if not self._finished_state:
                self.fail(f"the build stopped unexpectedly during {self.run_sub_state}")

    async def _pipeline(self) -> None:
        try:
            await self._build()
        except Exception as exc:  # a provider failed outside a step: the run fails, naming the phase
            self.fail(f"{self.run_sub_state} failed ({self.activity}): {describe(exc)}")

    async def _build(self) -> None:
        built = await self.build_artifact()
        if built is not None:
            await self._distribute(*built)

    async def build_artifact(self) -> tuple[Artifact, StepError | None] | None:
        """The VM part of the run: resolve the source, check the targets, customize, capture, optimize, validate.

        Returns the captured artifact and the validation's error (when ``continueDistributeOnFailure`` lets it be
        distributed anyway), or ``None`` when the run has reached its final state (a failed step,
        ``sourceValidationOnly``). Anything else that fails raises."""
        plan, ctx = self.plan, self.ctx
        self.phase("Building")
        await self._host_preflight()
        self.activity = f"resolving source {type_name_of(type(plan.source_spec))}"
        image = await plan.source().resolve(plan.source_spec, ctx)
        self.exact_version = image.exact_version
        if self.distribution.preflight_count():
            self.activity = f"checking {self.distribution.preflight_count()} distribution target(s)"
            await self.distribution.preflight(image)
        vm = vm_request(plan.loaded.properties, image)
        if plan.source_validation_only:
            self.activity = f"starting the validation VM on {plan.host.name}"
            await self._on_machine(image, vm, self._validate_source)
            return None
        self.activity = "fetching the steps' inputs, looking up cached layers"
        self.cache = cache = await self._open_cache(image, vm)
        try:
            self.activity = f"starting the build VM on {plan.host.name}"
            artifact = await self._on_machine(cache.boot_image, vm, self._customize)
        finally:
            with anyio.CancelScope(shield=True):
                await cache.close()
        if artifact is None:
            return None
        artifact = await self._optimize(image, vm, artifact)
        if artifact is None:
            return None
        validation_error: StepError | None = None
        if plan.validations:
            # As AIB does, validate the captured image on a fresh validation VM booted from it.
            self.phase("Validating")
            self.activity = f"starting the validation VM on {plan.host.name}"
            captured = replace(image, path=artifact.path, format=artifact.format, sha256=artifact.sha256)
            self._boot_started = anyio.current_time()
            validation_error = await self._on_machine(captured, vm, self._validate)
            if self._finished_state:
                return None
        return artifact, validation_error

    async def _open_cache(self, image: DiskImage, vm: VmRequest) -> StepCache:
        """The step cache of this run: keys for the customize steps and the longest stored prefix."""
        plan = self.plan
        steps = [
            (_step_name(step.spec, step.type_name, index), step.type_name, step.runner, step.spec)
            for index, step in enumerate(plan.steps)
        ]
        facts = host_facts(plan.host, vm, plan.loaded.properties.vm_profile, self.ctx)
        cache = await StepCache.open(
            self.ctx,
            self.emit,
            image=image,
            steps=steps,
            facts=facts,
            enabled=self.ctx.options.cache,
            host_name=plan.host.name,
        )
        if self.resume is not None:
            cache.explain_resume(*self.resume)
        return cache

    async def _host_preflight(self) -> None:
        """Let the build host refuse a request it cannot serve (optional ``BuildHost.preflight``, e.g. an unmapped
        ``vnetConfig.subnetId``) before the source is resolved or any VM boots."""
        host = self.plan.host()
        check = getattr(host, "preflight", None)
        if callable(check):
            self.activity = f"checking the build host {self.plan.host.name}"
            await check(VmRequest(extra=vm_extra(self.plan.loaded.properties)), self.ctx)

    async def _on_machine(self, image: DiskImage, vm: VmRequest, work: Callable[[Machine], Awaitable[T]]) -> T:
        """Boot ``image`` on the plan's build host, run ``work`` on the machine, then destroy it."""

        def destroying() -> None:
            self.activity = "destroying the VM"

        manager = self.plan.host().start(image, vm, self.ctx)
        return await on_machine(manager, work, self.warn, on_destroy=destroying)

    async def _validate_source(self, machine: Machine) -> None:
        """``sourceValidationOnly``: validate the source image itself; no customization, no distribution."""
        self.phase("Validating")
        error = await self._run_steps("validate", self.plan.validations, machine)
        if error is None:
            self.finish("Succeeded", "source validation succeeded (sourceValidationOnly)")
        else:
            await self._step_failed(error, machine, self.plan.on_validation_error, "validation")

    async def _customize(self, machine: Machine) -> Artifact | None:
        """Run the steps and the hidden deprovision step, then shut down and capture; ``None`` on failure."""
        plan = self.plan
        self.phase("Customizing")
        error = await self._run_customize_steps(machine)
        if error is None:
            error = await self._deprovision(machine)
        if error is not None:
            await self._step_failed(error, machine, plan.on_customizer_error, "customization")
            return None
        self.activity = "shutting down the build VM"
        await machine.shutdown()
        self.activity = "capturing the disk"
        return await machine.capture(self.ctx)

    async def _optimize(self, image: DiskImage, vm: VmRequest, artifact: Artifact) -> Artifact | None:
        """``optimize`` (the ``Optimizing`` sub-state): boot the captured image once to the end of its first boot
        (``vmBoot``), run ``workload.scriptUri`` (fetched, its checksum verified), generalize again, shut down and
        keep that disk. Its boot times are recorded in ``self.optimization`` (the next boot's by the validation VM).
        ``None`` when a step failed (the run has failed)."""
        spec = self.plan.loaded.properties.optimize
        vm_boot = spec is not None and spec.vm_boot is not None and spec.vm_boot.state == "Enabled"
        workload = spec.workload if spec is not None else None
        script = workload.script_uri if workload is not None and workload.state == "Enabled" else None
        if not vm_boot and not script:
            return artifact
        self.phase("Optimizing")
        self.activity = f"starting the optimization VM on {self.plan.host.name}"
        captured = replace(image, path=artifact.path, format=artifact.format, sha256=artifact.sha256)
        started = anyio.current_time()

        async def optimize(machine: Machine) -> Artifact | None:
            self.optimization["firstBootSeconds"] = round(anyio.current_time() - started, 3)
            error: StepError | None = None
            if script:
                shell = "PowerShell" if machine.communicator.os_type == "Windows" else "Shell"
                runner = await anyio.to_thread.run_sync(self.plan.plugins.customizer, shell)  # may import it
                step = runner.spec_model.model_validate(
                    {"type": shell, "scriptUri": script, "sha256Checksum": workload.sha256_checksum if workload else ""}
                )
                error = await self._run_step("optimize", 0, "workload", shell, runner, step, machine)
            if error is None:
                error = await self._deprovision(machine)  # the first boot undid the generalization
            if error is not None:
                await self._step_failed(error, machine, self.plan.on_customizer_error, "optimization")
                return None
            self.activity = "shutting down the optimization VM"
            await machine.shutdown()
            self.activity = "capturing the optimized disk"
            return await machine.capture(self.ctx)

        return await self._on_machine(captured, vm, optimize)

    async def _validate(self, machine: Machine) -> StepError | None:
        """Run ``inVMValidations``; on failure end the run unless ``continueDistributeOnFailure`` (and cleanup)."""
        plan = self.plan
        if self.optimization:  # what vmBoot saved: the optimized image's next boot against its first one
            self.optimization["nextBootSeconds"] = round(anyio.current_time() - self._boot_started, 3)
            self.ctx.log(
                "optimize",
                f"boot to ready: first {self.optimization['firstBootSeconds']:g}s, "
                f"after optimization {self.optimization['nextBootSeconds']:g}s",
                "info",
            )
        error = await self._run_steps("validate", plan.validations, machine)
        if error is not None:
            if plan.on_validation_error == "abort" or not plan.continue_distribute_on_failure:
                await self._step_failed(error, machine, plan.on_validation_error, "validation")
            else:
                self.warn("validation failed; distributing anyway (continueDistributeOnFailure)")
        return error

    async def _step_failed(self, error: StepError, machine: Machine, handling: str, what: str) -> None:
        message = f"{what} failed: {error}"
        if handling == "abort":
            access = await keep_machine(machine, self.warn)
            if access is not None:
                self.kept_vm = access
                message += f"\nThe build VM was kept for debugging (errorHandling: abort): {access}"
        self.fail(message)

    # Steps -------------------------------------------------------------------------------------------------

    async def _run_steps(self, phase: StepPhase, steps: list[StepPlan], machine: Machine) -> StepError | None:
        for index, step in enumerate(steps):
            name = _step_name(step.spec, step.type_name, index)
            error = await self._run_step(phase, index, name, step.type_name, step.runner, step.spec, machine)
            if error is not None:
                return error
        return None

    async def _run_customize_steps(self, machine: Machine) -> StepError | None:
        """The customize steps: those in the cached prefix are reported as cached, each later one runs and (cache
        on, host able) leaves a layer."""
        cache = self.cache
        resumed = cache is not None and cache.resumed(machine)
        for index, step in enumerate(self.plan.steps):
            name = _step_name(step.spec, step.type_name, index)
            if cache is not None and index < cache.prefix:
                self.emit(StepStarted(phase="customize", index=index, name=name, type=step.type_name))
                layer = cache.slots[index].key
                self.emit(
                    StepFinished(
                        phase="customize",
                        index=index,
                        name=name,
                        type=step.type_name,
                        ok=True,
                        duration=0.0,
                        cached=True,
                        layer=layer[:12] if layer else None,
                        ram_state=resumed and index == cache.prefix - 1,
                    )
                )
                continue
            run_ctx, fetcher = cache.context_for(index) if cache is not None else (self.ctx, None)
            error = await self._run_step(
                "customize", index, name, step.type_name, step.runner, step.spec, machine, run_ctx=run_ctx
            )
            if error is not None:
                return error
            if cache is not None and cache.enabled:
                self.activity = f"storing the layer of step {name!r}"
                await cache.after_step(index, machine, fetcher)
        return None

    async def _run_step(
        self,
        phase: StepPhase,
        index: int,
        name: str,
        type_name: str,
        runner: type[Customizer],
        spec: BaseModel,
        machine: Machine,
        *,
        run_ctx: RunContext | None = None,
    ) -> StepError | None:
        step = StepContext(
            run=run_ctx or self.ctx,
            communicator=machine.communicator,
            phase=phase,
            index=index,
            name=name,
            type=type_name,
        )
        self.activity = f"{phase} step {name!r}"
        self.emit(StepStarted(phase=phase, index=index, name=name, type=type_name))
        started = anyio.current_time()
        error: StepError | None = None
        try:
            await runner().run(spec, step)
        except Exception as exc:
            inner = first_error(exc)
            error = inner if isinstance(inner, StepError) else StepError(name, describe(exc), log_tail=list(step.tail))
        except BaseException:
            self.emit(
                StepFinished(
                    phase=phase,
                    index=index,
                    name=name,
                    type=type_name,
                    ok=False,
                    duration=anyio.current_time() - started,
                    error="canceled",
                )
            )
            raise
        self.emit(
            StepFinished(
                phase=phase,
                index=index,
                name=name,
                type=type_name,
                ok=error is None,
                duration=anyio.current_time() - started,
                exit_code=error.exit_code if error else None,
                error=str(error) if error else None,
            )
        )
        return error

    def _deprovisioner(self, os_type: str) -> type[Customizer] | None:
        """The hidden last step for ``os_type``: a customizer marked ``hidden`` whose ``os_types`` (a class
        attribute; absent: every OS) has the guest's OS (``Deprovision``, ``WindowsDeprovision`` …)."""
        for runner in self.plan.plugins.hidden_customizers():
            if os_type in getattr(runner, "os_types", (os_type,)):
                return runner
        return None

    async def _deprovision(self, machine: Machine) -> StepError | None:
        os_type = machine.communicator.os_type
        runner = await anyio.to_thread.run_sync(self._deprovisioner, os_type)  # may import it
        if runner is None:
            self.warn(f"no {DEPROVISION_TYPE} step is installed for {os_type}; the image is not generalized")
            return None
        try:
            spec = runner.spec_model.model_validate({"type": runner.type_name})
        except Exception as exc:
            self.warn(f"the {runner.type_name} step cannot be configured: {describe(exc)}")
            return None
        return await self._run_step("deprovision", 0, DEPROVISION_TYPE, runner.type_name, runner, spec, machine)

    # Distribution ------------------------------------------------------------------------------------------

    async def _distribute(self, artifact: Artifact, validation_error: StepError | None) -> None:
        self.phase("Distributing")
        self.activity = f"distributing to {len(self.plan.targets)} target(s)"
        await self.distribution.publish(artifact)
        self.finish(*self.distribution.verdict(validation_error))
