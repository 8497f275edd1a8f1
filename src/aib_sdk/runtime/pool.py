"""``bounded_map``: run one coroutine per item with at most ``limit`` running at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

from .errors import raise_first

T = TypeVar("T")
R = TypeVar("R")


async def bounded_map(func: Callable[[T], Awaitable[R]], items: Iterable[T], limit: int) -> list[R]:
    """``[await func(item) for item in items]`` with up to ``limit`` calls in flight; results in input order.

    ``limit`` workers take the items in turn, so a pool over thousands of items (the pages of a disk) runs only
    ``limit`` tasks. The first failure cancels the rest and is raised as itself (not an exception group); the
    other failures are attached to it as notes.
    """
    todo = list(items)
    results: list[R | None] = [None] * len(todo)
    pending = iter(enumerate(todo))

    async def worker() -> None:
        for index, item in pending:
            results[index] = await func(item)

    with raise_first():
        async with anyio.create_task_group() as tg:
            for _ in range(min(max(1, limit), len(todo))):
                tg.start_soon(worker)
    return results  # type: ignore[return-value]
