"""One run of a :class:`~aib_sdk.builder.plan.Plan` with AIB's semantics.

Queued → Building (resolve the source, boot the build VM) → Customizing (each step in order, its own session,
then the hidden deprovision step; shutdown and capture) → Validating (``inVMValidations``) → Distributing (every
target concurrently under ``max_parallel_targets``). ``errorHandling`` (cleanup|abort), ``continueDistributeOnFailure``,
``sourceValidationOnly``, the build timeout and cancellation are honoured here; every resource's cleanup is
registered before the next await and runs shielded and bounded (the build VM's context is held by its own task,
so a provider's task groups and cancel scopes nest correctly).

As in AIB, validation runs on a separate validation VM booted from the captured (deprovisioned) image, so it
checks the image that will be published; ``sourceValidationOnly`` boots the source itself instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import anyio.abc
from pydantic import BaseModel

from aib_sdk.artifacts import Artifact, DiskImage, ProvisioningState, RunOutput
from aib_sdk.cache.session import StepCache, host_facts
from aib_sdk.context import RunContext, StepContext
from aib_sdk.errors import AibError, DistributeError, StepError
from aib_sdk.events import (
    Event,
    PhaseChanged,
    RunFinished,
    RunStarted,
    RunState,
    RunSubState,
    StepFinished,
    StepPhase,
    StepStarted,
    TargetStatus,
    Warning,
)
from aib_sdk.plugins.registry import type_name_of
from aib_sdk.protocols import Customizer, Machine, VmRequest
from aib_sdk.redaction import redact_text
from aib_sdk.result import TIMEOUT_MESSAGE, BuildResult, LastRunStatus
from aib_sdk.runtime import first_error

from .plan import Plan, StepPlan, TargetPlan

T = TypeVar("T")

CLEANUP_TIMEOUT = 120.0
"""Seconds any one cleanup (destroying the VM, closing a connection) may take once the run is ending."""

DEPROVISION_TYPE = "Deprovision"


def _now() -> datetime:
    return datetime.now(UTC)


def _describe(exc: BaseException) -> str:
    exc = first_error(exc)
    text = redact_text(str(exc))
    if isinstance(exc, AibError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _step_name(spec: BaseModel, type_name: str, index: int) -> str:
    name = getattr(spec, "name", None)
    return name if isinstance(name, str) and name else f"{type_name}-{index + 1}"


def vm_extra(props: Any) -> dict[str, Any]:
    """What a build host may honour beyond the VmRequest fields: ``subnetId`` (vmProfile.vnetConfig)."""
    vnet = props.vm_profile.vnet_config if props.vm_profile else None
    return {"subnetId": vnet.subnet_id} if vnet is not None and vnet.subnet_id else {}


class Execution:
    """The mutable state of one run and the phases that move it."""

    def __init__(self, plan: Plan, ctx: RunContext, emit: Callable[[Event], None]) -> None:
        self.plan = plan
        self.ctx = ctx
        self._emit = emit
        self.status = LastRunStatus()
        self.outputs: dict[str, RunOutput] = {}
        self.output_types: dict[str, str] = {}
        self.exact_version: str | None = None
        self.kept_vm: str | None = None
        self.activity = "queued"
        self.phase_times: dict[str, float] = {}
        self.optimization: dict[str, float] = {}
        self._boot_started = 0.0
        self.cancel_scope: anyio.CancelScope | None = None
        self.cancel_requested = False
        self._finished_state = False
        self._end_mark: float | None = None
        self.cache: StepCache | None = None
        self.resume: tuple[str, dict[str, Any]] | None = None
        """``--resume``: the run id and run.json of the run being resumed (read by the Builder before the start)."""

    # State -------------------------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self._emit(event)

    def phase(self, sub_state: RunSubState, run_state: RunState = "Running") -> None:
        self.status.run_sub_state = sub_state
        self.status.run_state = run_state
        self.phase_times.setdefault(sub_state, anyio.current_time())
        self.emit(PhaseChanged(run_state=run_state, run_sub_state=sub_state))

    def finish(self, state: RunState, message: str) -> None:
        """Set the final state (the first call wins)."""
        if self._finished_state:
            return
        self._finished_state = True
        self.status.run_state = state
        self.status.message = redact_text(message)

    def fail(self, message: str) -> None:
        self.finish("Failed", message)

    def request_cancel(self) -> None:
        self.cancel_requested = True
        if not self._finished_state and self.status.run_state == "Running":
            self.phase(self.status.run_sub_state, "Canceling")
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def result(self, staging_directory: Any) -> BuildResult:
        return BuildResult(
            run_id=self.ctx.run_id,
            template_name=self.ctx.template_name,
            last_run_status=self.status,
            run_outputs=dict(self.outputs),
            source_exact_version=self.exact_version,
            staging_directory=staging_directory,
        )

    def phase_durations(self) -> dict[str, float]:
        """Seconds spent in each run sub-state, in order."""
        marks = sorted(self.phase_times.items(), key=lambda kv: kv[1])
        end = self._end_mark if self._end_mark is not None else anyio.current_time()
        return {
            name: round((marks[i + 1][1] if i + 1 < len(marks) else end) - start, 3)
            for i, (name, start) in enumerate(marks)
        }

    def run_finished(self) -> None:
        self._end_mark = anyio.current_time()
        self.status.end_time = self.status.end_time or _now()
        self.emit(
            RunFinished(
                run_state=self.status.run_state,
                run_sub_state=self.status.run_sub_state,
                message=self.status.message,
            )
        )

    # The run -----------------------------------------------------------------------------------------------

    async def execute(self, warnings: Sequence[str] = ()) -> None:
        """Run to a final state. Re-raises the caller's cancellation after recording ``Canceled``."""
        self.status.start_time = _now()
        self.emit(
            RunStarted(
                run_id=self.ctx.run_id,
                template_name=self.ctx.template_name,
                staging_directory=str(self.ctx.staging.directory),
            )
        )
        for warning in warnings:
            self.emit(Warning(message=warning))
        self.phase("Queued")
        try:
            with anyio.CancelScope() as self.cancel_scope:
                if self.cancel_requested:
                    self.cancel_scope.cancel()
                with anyio.move_on_after(self.plan.timeout) as deadline:
                    await self._pipeline()
                if deadline.cancelled_caught:
                    self.fail(
                        f"{TIMEOUT_MESSAGE} after {self.plan.timeout_text} during {self.status.run_sub_state} "
                        f"({self.activity}); everything it started was cleaned up"
                    )
            if self.cancel_scope.cancelled_caught:
                self.finish("Canceled", f"the build was canceled during {self.status.run_sub_state} ({self.activity})")
        except anyio.get_cancelled_exc_class():
            self.finish("Canceled", f"the build was canceled during {self.status.run_sub_state} ({self.activity})")
            raise
        finally:
            self.status.end_time = _now()
            if not self._finished_state:
                self.fail(f"the build stopped unexpectedly during {self.status.run_sub_state}")

    async def _pipeline(self) -> None:
        try:
            await self._build()
        except Exception as exc:  # a provider failed outside a step: the run fails, naming the phase
            self.fail(f"{self.status.run_sub_state} failed ({self.activity}): {_describe(exc)}")

    async def _build(self) -> None:
        plan, ctx = self.plan, self.ctx
        self.phase("Building")
        await self._host_preflight()
        self.activity = f"resolving source {type_name_of(type(plan.source_spec))}"
        image = await plan.source().resolve(plan.source_spec, ctx)
        self.exact_version = image.exact_version
        await self._preflight(image)
        props = plan.loaded.properties
        vm = VmRequest(
            vm_size=props.vm_profile.vm_size if props.vm_profile else "",
            os_disk_size_gb=props.vm_profile.os_disk_size_gb if props.vm_profile else 0,
            data_disk_sizes_gb=tuple(d.size_gb for d in props.additional_data_disks or []),
            os_type=image.os_type,
            extra=vm_extra(props),
        )
        if plan.source_validation_only:
            self.activity = f"starting the validation VM on {plan.host.name}"
            await self._on_machine(image, vm, self._validate_source)
            return
        self.activity = "fetching the steps' inputs, looking up cached layers"
        self.cache = cache = await self._open_cache(image, vm)
        try:
            self.activity = f"starting the build VM on {plan.host.name}"
            artifact = await self._on_machine(cache.boot_image, vm, self._customize)
        finally:
            with anyio.CancelScope(shield=True):
                await cache.close()
        if artifact is None:
            return
        artifact = await self._optimize(image, vm, artifact)
        if artifact is None:
            return
        validation_error: StepError | None = None
        if plan.validations:
            # As AIB does, validate the captured image on a fresh validation VM booted from it.
            self.phase("Validating")
            self.activity = f"starting the validation VM on {plan.host.name}"
            captured = replace(image, path=artifact.path, format=artifact.format, sha256=artifact.sha256)
            self._boot_started = anyio.current_time()
            validation_error = await self._on_machine(captured, vm, self._validate)
            if self._finished_state:
                return
        await self._distribute(artifact, validation_error)

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
        """Boot ``image``, run ``work`` on the machine, then destroy it (shielded, bounded) whatever happened."""
        release = anyio.Event()
        async with anyio.create_task_group() as tg:
            try:
                machine = await tg.start(self._hold_machine, self.plan.host().start(image, vm, self.ctx), release)
                result = await work(machine)
                self.activity = "destroying the VM"
            finally:
                release.set()  # the holder now leaves the machine's context
        return result

    async def _hold_machine(
        self,
        manager: AbstractAsyncContextManager[Machine],
        release: anyio.Event,
        *,
        task_status: anyio.abc.TaskStatus[Machine] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own the build VM's context in one task so the provider's scopes nest; its exit is shielded and bounded.

        Booting can be cancelled; once the machine is handed over, only ``release`` (set by the run in a
        ``finally``) ends it, after which destruction gets :data:`CLEANUP_TIMEOUT` seconds.
        """
        started = False
        with anyio.CancelScope() as scope:
            try:
                async with manager as machine:
                    scope.shield = True
                    started = True
                    task_status.started(machine)
                    await release.wait()
                    scope.deadline = anyio.current_time() + CLEANUP_TIMEOUT
            except Exception as exc:
                if not started:
                    raise
                self._cleanup_failed("the build VM", exc)
        if scope.cancelled_caught:
            self._cleanup_failed("the build VM", TimeoutError(f"it took longer than {CLEANUP_TIMEOUT:g}s"))

    async def _validate_source(self, machine: Machine) -> None:
        """``sourceValidationOnly``: validate the source image itself; no customization, no distribution."""
        self.phase("Validating")
        error = await self._run_steps("validate", self.plan.validations, machine)
        if error is None:
            self.finish("Succeeded", "source validation succeeded (sourceValidationOnly)")
        else:
            self._step_failed(error, machine, self.plan.on_validation_error, "validation")

    async def _customize(self, machine: Machine) -> Artifact | None:
        """Run the steps and the hidden deprovision step, then shut down and capture; ``None`` on failure."""
        plan = self.plan
        self.phase("Customizing")
        error = await self._run_customize_steps(machine)
        if error is None:
            error = await self._deprovision(machine)
        if error is not None:
            self._step_failed(error, machine, plan.on_customizer_error, "customization")
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
                runner = self.plan.plugins.customizer(shell)
                step = runner.spec_model.model_validate(
                    {"type": shell, "scriptUri": script, "sha256Checksum": workload.sha256_checksum if workload else ""}
                )
                error = await self._run_step("optimize", 0, "workload", shell, runner, step, machine)
            if error is None:
                error = await self._deprovision(machine)  # the first boot undid the generalization
            if error is not None:
                self._step_failed(error, machine, self.plan.on_customizer_error, "optimization")
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
                self._step_failed(error, machine, plan.on_validation_error, "validation")
            else:
                self.emit(Warning(message="validation failed; distributing anyway (continueDistributeOnFailure)"))
        return error

    def _cleanup_failed(self, what: str, exc: BaseException) -> None:
        self.emit(Warning(message=f"cleanup of {what} failed: {_describe(exc)}"))

    def _step_failed(self, error: StepError, machine: Machine, handling: str, what: str) -> None:
        message = f"{what} failed: {error}"
        if handling == "abort":
            try:
                access = machine.keep()
            except Exception as exc:
                self.emit(Warning(message=f"errorHandling abort: the build VM could not be kept: {_describe(exc)}"))
            else:
                self.kept_vm = access
                self.emit(Warning(message=f"errorHandling abort: the build VM was kept running: {access}"))
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
            error = inner if isinstance(inner, StepError) else StepError(name, _describe(exc), log_tail=list(step.tail))
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
        for runner in self.plan.plugins.registry.customizers.values():
            if getattr(runner, "hidden", False) and os_type in getattr(runner, "os_types", (os_type,)):
                return runner
        return None

    async def _deprovision(self, machine: Machine) -> StepError | None:
        os_type = machine.communicator.os_type
        runner = self._deprovisioner(os_type)
        if runner is None:
            self.emit(
                Warning(message=f"no {DEPROVISION_TYPE} step is installed for {os_type}; the image is not generalized")
            )
            return None
        try:
            spec = runner.spec_model.model_validate({"type": runner.type_name})
        except Exception as exc:
            self.emit(Warning(message=f"the {runner.type_name} step cannot be configured: {_describe(exc)}"))
            return None
        return await self._run_step("deprovision", 0, DEPROVISION_TYPE, runner.type_name, runner, spec, machine)

    # Distribution ------------------------------------------------------------------------------------------

    async def _preflight(self, image: DiskImage) -> None:
        """Ask each target that can (optional ``Distributor.preflight``) whether it will accept the image, before any
        VM boots: a missing gallery definition fails the run in seconds, as AIB refuses such a template at
        submission."""
        targets = [t for t in self.plan.targets if callable(getattr(t.distributor, "preflight", None))]
        if not targets:
            return
        self.activity = f"checking {len(targets)} distribution target(s)"
        refused: list[str] = []

        async def check(target: TargetPlan) -> None:
            try:
                await target.distributor().preflight(target.spec, image, self.ctx)  # type: ignore[attr-defined]
            except Exception as exc:
                name, message = target.run_output_name, _describe(exc)
                refused.append(f"{name}: {message}")
                self.outputs[name] = RunOutput(name, provisioning_state="Failed", error=message)
                self.output_types[name] = target.type_name
                self.emit(TargetStatus(run_output_name=name, type=target.type_name, state="Failed", message=message))

        async with anyio.create_task_group() as tg:
            for target in targets:
                tg.start_soon(check, target)
        if refused:
            summary = "; ".join(refused)
            raise DistributeError(f"{len(refused)} target(s) cannot be published, nothing was built: {summary}")

    async def _distribute(self, artifact: Artifact, validation_error: StepError | None) -> None:
        targets = self.plan.targets
        self.phase("Distributing")
        self.activity = f"distributing to {len(targets)} target(s)"
        for target in targets:
            self.outputs[target.run_output_name] = RunOutput(target.run_output_name, provisioning_state="Running")
            self.output_types[target.run_output_name] = target.type_name
        limiter = anyio.CapacityLimiter(max(1, self.ctx.options.max_parallel_targets))
        try:
            async with anyio.create_task_group() as tg:
                for target in targets:
                    tg.start_soon(self._publish, artifact, target, limiter)
        finally:
            for output in self.outputs.values():
                if output.provisioning_state == "Running":
                    output.provisioning_state = "Canceled"
        failed = [o for o in self.outputs.values() if o.provisioning_state != "Succeeded"]
        summary = "; ".join(f"{o.run_output_name}: {o.error}" for o in failed)
        if validation_error is not None:
            message = f"validation failed: {validation_error}"
            if failed:
                message += f"\ndistribution failed for {len(failed)} of {len(targets)} target(s): {summary}"
            self.fail(message)
        elif not failed:
            self.finish("Succeeded", "")
        elif len(failed) < len(targets):
            self.finish("PartiallySucceeded", f"{len(failed)} of {len(targets)} target(s) failed: {summary}")
        else:
            self.fail(f"distribution failed for every target: {summary}")

    async def _publish(self, artifact: Artifact, target: TargetPlan, limiter: anyio.CapacityLimiter) -> None:
        name, type_name = target.run_output_name, target.type_name
        async with limiter:
            self.emit(TargetStatus(run_output_name=name, type=type_name, state="Running"))
            try:
                output = await target.distributor().publish(artifact, target.spec, self.ctx)
            except Exception as exc:
                message = _describe(exc)
                self.outputs[name] = RunOutput(name, provisioning_state="Failed", error=message)
                self.emit(TargetStatus(run_output_name=name, type=type_name, state="Failed", message=message))
                return
            except BaseException:
                self.outputs[name] = RunOutput(name, provisioning_state="Canceled", error="canceled")
                self.emit(TargetStatus(run_output_name=name, type=type_name, state="Canceled"))
                raise
        output.run_output_name = name
        self.outputs[name] = output
        state: ProvisioningState = "Failed" if output.provisioning_state == "Failed" else "Succeeded"
        output.provisioning_state = state
        self.emit(
            TargetStatus(
                run_output_name=name,
                type=type_name,
                state=state,
                message=output.error or "",
                artifact_id=output.artifact_id,
                artifact_uri=output.artifact_uri,
            )
        )
