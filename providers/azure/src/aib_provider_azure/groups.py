"""Unwrap task-group exception groups so callers see the first real error (a DistributeError, not a group)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextmanager
def first_error() -> Iterator[None]:
    """Re-raise the first non-cancellation error of an exception group escaping the block."""
    try:
        yield
    except BaseExceptionGroup as group:
        cancelled = anyio.get_cancelled_exc_class()
        errors = [e for e in _leaves(group) if not isinstance(e, cancelled)]
        if errors:
            raise errors[0] from None
        raise
