"""The one retry: bounded attempts, one backoff formula with jitter, a server's ``Retry-After`` honoured.

Every retrying call in the tree goes through :func:`retrying` (the HTTP transport, resumable downloads, S3 calls);
only the question "is this failure worth another attempt?" stays with the caller.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import TypeVar

import anyio

T = TypeVar("T")

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt: timeouts, throttling and transient server errors."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    ``attempts`` counts every try (the first included). The wait after failed attempt ``n`` (1-based) is
    ``min(cap, base * 2**(n-1))`` scaled by a random factor in ``[0.5, 1]`` (so concurrent clients spread out
    but never retry at once); a server's ``Retry-After`` replaces it, bounded by ``cap`` as well.
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, asked: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); ``asked`` is the server's wish, if any."""
        if asked is not None:
            return min(max(0.0, asked), self.cap)
        return float(min(self.cap, self.base * 2 ** (max(1, attempt) - 1)) * random.uniform(0.5, 1.0))


DEFAULT_POLICY = RetryPolicy()


class RetryableError(Exception):
    """Raised inside a retried call to ask for another attempt, optionally after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; ``last`` is the final one (also the ``__cause__``)."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"gave up after {attempts} attempts: {describe(last)}")
        self.attempts = attempts
        self.last = last


def describe(exc: BaseException) -> str:
    """``Type: message`` of an error, the message alone for a :class:`RetryableError`."""
    if isinstance(exc, RetryableError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked to wait: ``retry-after-ms``/``x-ms-retry-after-ms``, or ``Retry-After`` (seconds
    or an HTTP date); ``None`` when it did not say."""
    headers = {name.lower(): value for name, value in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time())
        except (TypeError, ValueError):
            return None


def _never(exc: BaseException) -> bool:
    return False


async def retrying(
    call: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy | None = None,
    retryable: Callable[[BaseException], bool] = _never,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await ``call(attempt)`` (``attempt`` from 1) until it returns, retrying failures worth another attempt.

    A :class:`RetryableError` (with its ``retry_after``) and any exception ``retryable`` approves are retried
    after :meth:`RetryPolicy.delay`; anything else propagates at once. When the attempts run out the last error
    is raised as itself, except a :class:`RetryableError`, which becomes :class:`RetriesExhausted`.
    ``on_retry(attempt, error, delay)`` is told before each wait (for a log line).
    """
    policy = policy or DEFAULT_POLICY
    attempts = max(1, policy.attempts)
    for attempt in range(1, attempts + 1):
        try:
            return await call(attempt)
        except Exception as exc:
            asked = exc.retry_after if isinstance(exc, RetryableError) else None
            if not isinstance(exc, RetryableError) and not retryable(exc):
                raise
            if attempt == attempts:
                if isinstance(exc, RetryableError):
                    raise RetriesExhausted(attempts, exc) from exc
                raise
            delay = policy.delay(attempt, asked)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
