"""``aib worker``: serve builds from a Temporal cluster with this machine's providers and configuration.

One Temporal worker runs the (cheap, deterministic) build workflows on the base task queue; one activity worker
per capability queue (see :mod:`.capabilities`) runs builds, and one on this worker's own queue publishes their
targets (see :mod:`.targets`). ``max_builds`` caps the builds running at once across all of them (see
:mod:`.slots`). SIGTERM/SIGINT stop polling and wait up to ``grace`` seconds for running builds; the ones still
running are then cancelled, cleaned up and handed back to be retried by another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from temporalio.worker import FixedSizeSlotSupplier, UnsandboxedWorkflowRunner, Worker, WorkerTuner

from aib_sdk.artifact_store import open_artifact_store

from .activity import BuildActivities
from .capabilities import Capabilities, probe_accelerator, worker_capabilities
from .settings import TemporalSettings, _identity
from .slots import BuildSlots
from .targets import TargetActivities, worker_queue
from .workflow import BuildWorkflow

HEARTBEAT_THROTTLE = timedelta(seconds=1)
"""Heartbeats reach the server at least this often, so a cancel request reaches a build within about a second."""

if TYPE_CHECKING:
    from aib_sdk.config import Config
    from aib_sdk.plugins.manager import PluginManager


async def run_worker(
    settings: TemporalSettings,
    plugins: PluginManager,
    config: Config,
    *,
    max_builds: int = 1,
    grace: float = 60.0,
    on_ready: Callable[[Capabilities, list[str]], None] | None = None,
    identity: str | None = None,
) -> None:
    """Serve builds until SIGTERM/SIGINT (or cancellation)."""
    caps = await anyio.to_thread.run_sync(worker_capabilities, plugins, config)
    caps = replace(caps, accelerator=await probe_accelerator(plugins, config, caps.build_hosts))
    queues = caps.queues(settings.task_queue)
    if not queues:
        from aib_sdk.errors import UsageError

        raise UsageError("this machine has no usable build host; install one (e.g. aib-provider-qemu)")
    client = await settings.connect()
    identity = identity or _identity()
    store = open_artifact_store(settings.artifact_store, plugins, config) if settings.artifact_store else None
    slots = BuildSlots(max_builds)
    targets = TargetActivities(worker_queue(settings.task_queue, identity))
    activities = BuildActivities(plugins, config, caps, store, identity, slots, targets)
    tuner = WorkerTuner.create_composite(
        workflow_supplier=FixedSizeSlotSupplier(20),
        activity_supplier=slots,
        local_activity_supplier=FixedSizeSlotSupplier(1),
        nexus_supplier=FixedSizeSlotSupplier(1),
    )
    shutdown = timedelta(seconds=grace)
    workers: list[Worker] = [
        Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[BuildWorkflow],
            identity=identity,
            # No sandbox: it swaps the process-wide ``sys.modules`` and ``__import__`` while a workflow task runs in
            # its thread, and a build's lazy imports on the event loop at that moment failed with SystemError
            # ("dictobject.c: bad argument to internal function"). The workflow module imports only the standard
            # library and temporalio and is deterministic by construction (see :mod:`.workflow`).
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
    ]
    workers += [
        Worker(
            client,
            task_queue=queue,
            activities=[activities.build],
            identity=identity,
            tuner=tuner,
            max_concurrent_activity_task_polls=1,
            graceful_shutdown_timeout=shutdown,
            max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
            default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        )
        for queue in queues
    ]
    target_worker = Worker(
        client,
        task_queue=targets.queue,
        activities=[targets.publish],
        identity=identity,
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(w.run()) for w in [*workers, target_worker]]
    if on_ready is not None:
        on_ready(caps, queues)
    try:
        done, _ = await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
        with anyio.CancelScope(shield=True):  # a cancelled caller still stops the workers cleanly
            # Builds first (stop polling, grace, hand back), while their target activities still run here and the
            # workflow worker still records what they send and finish with: it may be the only one left serving
            # the workflows.
            await asyncio.gather(*(w.shutdown() for w in workers[1:]), return_exceptions=True)
            for worker in (target_worker, workers[0]):
                with contextlib.suppress(Exception):
                    await worker.shutdown()
            await asyncio.gather(*tasks, return_exceptions=True)
