"""The build VM's life: boot it, hold its context in one task, keep it (``errorHandling: abort``) or destroy it.

:func:`on_machine` boots an image, runs some work on the machine and destroys it whatever happened: the machine's
context is held by its own task so a provider's task groups and cancel scopes nest correctly, and its exit is
shielded and bounded by :data:`CLEANUP_TIMEOUT`. A machine kept by :func:`keep_machine` stays running past it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import anyio
import anyio.abc

from aib_sdk.artifacts import DiskImage
from aib_sdk.protocols import Machine, VmRequest

from .describe import describe

T = TypeVar("T")

CLEANUP_TIMEOUT = 120.0
"""Seconds any one cleanup (destroying the VM, closing a connection) may take once the run is ending."""

Warn = Callable[[str], None]


def vm_extra(props: Any) -> dict[str, Any]:
    """What a build host may honour beyond the VmRequest fields: ``subnetId`` (vmProfile.vnetConfig)."""
    vnet = props.vm_profile.vnet_config if props.vm_profile else None
    return {"subnetId": vnet.subnet_id} if vnet is not None and vnet.subnet_id else {}


def vm_request(props: Any, image: DiskImage) -> VmRequest:
    """The build VM a template asks for (``vmProfile``, ``additionalDataDisks``) to boot ``image``."""
    return VmRequest(
        vm_size=props.vm_profile.vm_size if props.vm_profile else "",
        os_disk_size_gb=props.vm_profile.os_disk_size_gb if props.vm_profile else 0,
        data_disk_sizes_gb=tuple(d.size_gb for d in props.additional_data_disks or []),
        os_type=image.os_type,
        extra=vm_extra(props),
    )


async def on_machine(
    manager: AbstractAsyncContextManager[Machine],
    work: Callable[[Machine], Awaitable[T]],
    warn: Warn,
    *,
    on_destroy: Callable[[], None] | None = None,
) -> T:
    """Enter ``manager`` (a build host's ``start(...)``), run ``work`` on the machine, then destroy it (shielded,
    bounded) whatever happened. ``on_destroy`` is called when the work is done, before the machine is destroyed;
    a failed destruction is a warning, not an error of the run."""
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        try:
            machine = await tg.start(_hold_machine, manager, release, warn)
            result = await work(machine)
            if on_destroy is not None:
                on_destroy()
        finally:
            release.set()  # the holder now leaves the machine's context
    return result


async def _hold_machine(
    manager: AbstractAsyncContextManager[Machine],
    release: anyio.Event,
    warn: Warn,
    *,
    task_status: anyio.abc.TaskStatus[Machine] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Own the build VM's context in one task so the provider's scopes nest; its exit is shielded and bounded.

    Booting can be cancelled; once the machine is handed over, only ``release`` (set by :func:`on_machine` in a
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
            warn(f"cleanup of the build VM failed: {describe(exc)}")
    if scope.cancelled_caught:
        late = TimeoutError(f"it took longer than {CLEANUP_TIMEOUT:g}s")
        warn(f"cleanup of the build VM failed: {describe(late)}")


async def keep_machine(machine: Machine, warn: Warn) -> str | None:
    """``errorHandling: abort``: leave ``machine`` running past its context; how to reach it, ``None`` if it could
    not be kept (each outcome is also a warning)."""
    try:
        with anyio.fail_after(CLEANUP_TIMEOUT):
            access = await machine.keep()
    except Exception as exc:
        warn(f"errorHandling abort: the build VM could not be kept: {describe(exc)}")
        return None
    warn(f"errorHandling abort: the build VM was kept running: {access}")
    return access
