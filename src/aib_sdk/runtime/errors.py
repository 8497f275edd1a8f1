"""Exception groups from task groups, made readable without losing any error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


def leaves(exc: BaseException) -> list[BaseException]:
    """Every non-group exception inside ``exc`` (``[exc]`` when it is not a group), in order."""
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    found: list[BaseException] = []
    for inner in exc.exceptions:
        found.extend(leaves(inner))
    return found


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is the running backend's cancellation (asyncio's when no loop runs)."""
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except Exception:  # no event loop: only asyncio's exists here
        cancelled = asyncio.CancelledError
    return isinstance(exc, cancelled)


def first_error(exc: BaseException) -> BaseException:
    """The first real error in ``exc``: not a cancellation, an ``Exception`` before a ``BaseException``.

    ``exc`` itself when it holds nothing but cancellations. The others are kept on the returned error's
    ``__notes__`` (one line each) so nothing is silently dropped.
    """
    real = [e for e in leaves(exc) if not is_cancellation(e)]
    if not real:
        return exc
    chosen = next((e for e in real if isinstance(e, Exception)), real[0])
    for other in real:
        if other is not chosen:
            note = f"also: {type(other).__name__}: {other}"
            if note not in getattr(chosen, "__notes__", ()):
                chosen.add_note(note)
    return chosen


@contextmanager
def raise_first() -> Iterator[None]:
    """Re-raise the first real error of an exception group escaping the block (see :func:`first_error`)."""
    try:
        yield
    except BaseExceptionGroup as group:
        chosen = first_error(group)
        if chosen is group:
            raise
        raise chosen from None
