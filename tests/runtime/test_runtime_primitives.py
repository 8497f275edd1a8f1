"""The shared provider runtime: cleanup scopes, bounded pools and exception-group helpers."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from aib_sdk.runtime import bounded_map, cleanup_scope, first_error, leaves, raise_first

pytestmark = pytest.mark.anyio


async def test_cleanup_scope_finishes_after_cancel_and_is_bounded() -> None:
    done: list[str] = []
    with anyio.CancelScope() as outer:
        outer.cancel()
        with cleanup_scope(5):
            await anyio.sleep(0.01)
            done.append("released")
    assert done == ["released"]
    with cleanup_scope(0.05) as scope:
        await anyio.sleep(5)
    assert scope.cancelled_caught


async def test_bounded_map_keeps_order_and_limit() -> None:
    running = 0
    peak = 0

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.01 * (5 - i % 5))
        running -= 1
        return i * 2

    assert await bounded_map(work, range(12), 3) == [i * 2 for i in range(12)]
    assert peak == 3


async def test_bounded_map_raises_first_error_with_others_as_notes() -> None:
    async def work(i: int) -> int:
        if i in (1, 2):
            raise ValueError(f"bad {i}")
        await anyio.sleep(1)
        return i

    with pytest.raises(ValueError, match="bad") as info:
        await bounded_map(work, range(4), 4)
    assert not isinstance(info.value, BaseExceptionGroup)


def test_first_error_skips_cancellations_and_keeps_the_rest() -> None:
    cancelled = asyncio.CancelledError
    group = BaseExceptionGroup("g", [cancelled(), ExceptionGroup("inner", [KeyError("k"), OSError("disk")])])
    chosen = first_error(group)
    assert isinstance(chosen, KeyError)
    assert any("OSError: disk" in n for n in chosen.__notes__)
    assert len(leaves(group)) == 3
    only_cancel = BaseExceptionGroup("g", [cancelled()])
    assert first_error(only_cancel) is only_cancel


def test_raise_first_unwraps() -> None:
    with pytest.raises(RuntimeError, match="x"), raise_first():
        raise ExceptionGroup("g", [RuntimeError("x")])
