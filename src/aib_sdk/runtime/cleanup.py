"""``cleanup_scope``: the one idiom for work that must finish while a run is ending (shielded and time-bounded)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio

DEFAULT_CLEANUP_SECONDS = 60.0


@contextmanager
def cleanup_scope(seconds: float = DEFAULT_CLEANUP_SECONDS) -> Iterator[anyio.CancelScope]:
    """Shield the block from the caller's cancellation, but give up after ``seconds``.

    Use it around every release of an external resource (kill a VM, abort an upload, delete a blob): a cancelled
    or timed-out run still cleans up, and a cleanup that hangs cannot hold the run forever. The yielded scope's
    ``cancelled_caught`` tells whether the bound was hit.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(seconds) as bounded:
        yield bounded
