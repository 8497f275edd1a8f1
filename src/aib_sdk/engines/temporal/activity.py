"""The build activity: one whole Builder run on one worker, heartbeating, its events pushed back to the workflow;
its targets are published by activities of their own (:mod:`.targets`).

Cancellation from the workflow cancels the Builder (→ ``Canceled``, everything cleaned up) and reports the
Canceled result. A worker that is stopping hands the build back instead (a retryable error, so another worker
runs it). Template and usage errors are not retried. A build that reaches a worker with no free slot is handed
straight back without starting (see :mod:`.slots`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from aib_sdk.artifact_store import ArtifactStore
from aib_sdk.config import Config
from aib_sdk.errors import AibError, FetchError, TemplateError, UsageError
from aib_sdk.events import Event, Progress, WarningEvent
from aib_sdk.options import BuildOptions
from aib_sdk.plugins.manager import PluginManager

from .capabilities import Capabilities
from .inputs import InputFile, fetch_input
from .request import options_from_request
from .slots import BuildSlots
from .targets import TargetActivities
from .workflow import ACTIVITY_NAME, WORKER_FULL

FLUSH_SECONDS = 0.4
MAX_BATCH = 400


def _coalesce(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop progress events superseded by a later one of the same transfer in the same batch."""
    last: dict[tuple[Any, ...], int] = {}
    for i, ev in enumerate(batch):
        if ev.get("kind") == "progress":
            last[(ev.get("task"), ev.get("label"), ev.get("target"), ev.get("region"))] = i
    keep = set(last.values())
    return [ev for i, ev in enumerate(batch) if ev.get("kind") != "progress" or i in keep]


class EventPump:
    """Buffers events (the Builder's sink) and sends them in batches to the workflow, heartbeating as it goes."""

    def __init__(self, handle: WorkflowHandle[Any, Any], heartbeat_every: float) -> None:
        self.handle = handle
        self.heartbeat_every = heartbeat_every
        self.pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopping = False

    def sink(self, event: Event) -> None:
        self.pending.append(event.model_dump(mode="json"))
        if len(self.pending) >= MAX_BATCH or not isinstance(event, Progress):
            self._wake.set()

    async def flush(self) -> None:
        """Send everything buffered, in order (one signal per batch)."""
        async with self._lock:
            while self.pending:
                batch, self.pending = _coalesce(self.pending[:MAX_BATCH]), self.pending[MAX_BATCH:]
                await self.handle.signal("events", batch)

    async def run(self) -> None:
        """Send batches and heartbeat until :meth:`stop`; the last batch is sent before it returns."""
        loop = asyncio.get_running_loop()
        last_beat = 0.0
        while not self._stopping:
            # ``asyncio.timeout``, not ``wait_for``: on 3.11 ``wait_for`` swallows a cancel that lands once the event
            # is set (the pump of a finished build ran, and heartbeated, forever when it was stopped by a cancel).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._wake.wait()
            if not self._stopping:
                await asyncio.sleep(0.05)  # gather a few more events into the batch
            self._wake.clear()
            with contextlib.suppress(Exception):  # a lost batch must not stop the build
                await asyncio.shield(self.flush())
            if loop.time() - last_beat >= self.heartbeat_every:
                activity.heartbeat()
                last_beat = loop.time()

    def stop(self) -> None:
        """End :meth:`run` after one last batch (a flag, not a cancel: nothing can swallow it)."""
        self._stopping = True
        self._wake.set()


class BuildActivities:
    """The activity implementation bound to this worker's plugins, configuration and artifact store."""

    def __init__(
        self,
        plugins: PluginManager,
        config: Config,
        capabilities: Capabilities,
        store: ArtifactStore | None,
        identity: str,
        slots: BuildSlots,
        targets: TargetActivities,
    ) -> None:
        self.plugins = plugins
        self.config = config
        self.capabilities = capabilities
        self.store = store
        self.identity = identity
        self.slots = slots
        self.targets = targets
        self.inputs_folder = config.cache / "temporal-inputs"
        """Where verified inputs are kept; the only local files a remote build may read."""

    async def _inputs(self, request: Mapping[str, Any]) -> dict[str, Path]:
        items = [InputFile.from_json(i) for i in request.get("inputs") or []]
        if not items:
            return {}
        if self.store is None:
            raise UsageError("the build has local inputs but this worker has no [temporal] artifact_store")
        return {item.sha256: await fetch_input(self.store, item, self.inputs_folder) for item in items}

    @activity.defn(name=ACTIVITY_NAME)
    async def build(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.slots.try_start():
            raise ApplicationError(  # benign: the SDK logs it at debug level, not as a warning with a traceback
                f"worker {self.identity} is running {self.slots.limit} build(s)",
                type=WORKER_FULL,
                category=ApplicationErrorCategory.BENIGN,
            )
        try:
            return await self._build(request)
        finally:
            self.slots.finish()

    async def _build(self, request: dict[str, Any]) -> dict[str, Any]:
        from aib_sdk.builder import Builder

        info = activity.info()
        attempt = info.attempt + int(request.get("attemptsBefore", 0))
        handle = activity.client().get_workflow_handle(info.workflow_id or "")
        beat = info.heartbeat_timeout.total_seconds() / 4 if info.heartbeat_timeout else 5.0
        pump = EventPump(handle, max(0.2, min(beat, 5.0)))
        await handle.signal(
            "attempt",
            {"attempt": attempt, "worker": self.identity, "capabilities": self.capabilities.to_json()},
        )
        if attempt > 1:
            pump.sink(WarningEvent(message=f"attempt {attempt} of the build runs on worker {self.identity}"))
        pump_task = asyncio.create_task(pump.run())
        try:
            try:
                local_inputs = await self._inputs(request)
                options = options_from_request(
                    request,
                    local_inputs,
                    BuildOptions(
                        plugins=self.plugins,
                        config=self.config,
                        on_event=pump.sink,
                        base_directory=self.inputs_folder,
                        context=self.inputs_folder,  # nothing else on this machine is readable by the template
                        publisher=self.targets.publisher(handle, attempt),
                    ),
                )
                builder = Builder(request["document"], options=options)
            except (TemplateError, UsageError) as exc:
                raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
            except FetchError as exc:  # an input missing from the store or not matching its digest: same elsewhere
                raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
            except AibError as exc:
                raise ApplicationError(str(exc), type=type(exc).__name__) from None
            run = asyncio.create_task(builder.run())
            try:
                result = await asyncio.shield(run)
            except asyncio.CancelledError:
                stopping = activity.is_worker_shutdown()
                await asyncio.shield(builder.cancel())
                with contextlib.suppress(BaseException):
                    await run
                await asyncio.shield(pump.flush())
                if stopping:  # hand the build back: another worker runs it again
                    raise ApplicationError(f"worker {self.identity} stopped; the build is handed back") from None
                if builder.result is not None:
                    await asyncio.shield(handle.signal("finished", builder.result.to_dict()))
                raise
            except (TemplateError, UsageError) as exc:
                raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
            data = result.to_dict()
            data["worker"] = self.identity
            return data
        finally:
            pump.stop()
            with contextlib.suppress(Exception):
                await asyncio.shield(pump_task)
