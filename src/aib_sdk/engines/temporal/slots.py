"""The build slots of one ``aib worker``: at most ``--max-builds`` builds run at once, whatever queue they come from.

A worker polls several task queues (one per provider subset, see :mod:`.capabilities`), and every queue's poller
asks the slot supplier for a permit before it waits for a build. While the machine is full no poller asks for more
work; but a poll already waiting on another queue when the last slot is taken can still deliver a build. The
build activity therefore takes its slot itself (:meth:`BuildSlots.try_start`) and hands a build it has no slot for
straight back (error type :data:`~.workflow.WORKER_FULL`; the workflow queues it again without using up an
attempt).
"""

from __future__ import annotations

import asyncio
import threading

from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)

RESERVE_POLL_SECONDS = 0.25


class BuildSlots(CustomSlotSupplier):
    """Build slots shared by every activity worker of this process. (The SDK calls the sync methods from its
    own threads; the activity calls :meth:`try_start`/:meth:`finish` on the event loop.)"""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0
        """Builds this worker's pollers received and that have not ended (the pollers' throttle)."""
        self.running = 0
        self.most = 0
        """The most builds that ever ran here at once."""
        self._lock = threading.Lock()

    def try_start(self) -> bool:
        """Take a slot for a build that is about to start; ``False`` when all ``limit`` are taken."""
        with self._lock:
            if self.running >= self.limit:
                return False
            self.running += 1
            self.most = max(self.most, self.running)
            return True

    def finish(self) -> None:
        """Give back the slot of a build that ended."""
        with self._lock:
            self.running -= 1

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        while self.received >= self.limit:  # noqa: ASYNC110 - freed from SDK threads; polling keeps it simple
            await asyncio.sleep(RESERVE_POLL_SECONDS)
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        return SlotPermit() if self.received < self.limit else None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        with self._lock:
            self.received += 1

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        if ctx.slot_info is not None:  # permits of polls that brought nothing were never marked used
            with self._lock:
                self.received -= 1
