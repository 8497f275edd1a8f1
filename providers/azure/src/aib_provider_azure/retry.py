"""HTTP sends with retries: 408/429/5xx and transport errors, exponential backoff with jitter, Retry-After honoured."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time
from typing import TYPE_CHECKING

import anyio

from aib_sdk.errors import DistributeError

if TYPE_CHECKING:
    import httpx

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. ``cap`` bounds every single wait, including a server's Retry-After."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 60.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.cap, self.base * (2**attempt)) * (0.5 + random.random() / 2))


DEFAULT_POLICY = RetryPolicy()


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``x-ms-retry-after-ms`` or ``Retry-After``)."""
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = response.headers.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time())
        except (TypeError, ValueError):
            return None


async def send_with_retry(
    client: httpx.AsyncClient,
    build: Callable[[], Awaitable[httpx.Request]],
    *,
    what: str,
    policy: RetryPolicy | None = None,
) -> httpx.Response:
    """Send the request ``build()`` makes (rebuilt, and so re-signed, on each attempt); return the last response.

    Raises :class:`DistributeError` when the transport keeps failing; HTTP errors are returned for the caller.
    """
    import httpx  # imported on first request: registering the provider does not load the HTTP stack

    policy = policy or DEFAULT_POLICY
    for attempt in range(policy.attempts):
        last = attempt == policy.attempts - 1
        try:
            response = await client.send(await build())
        except httpx.TransportError as exc:
            if last:
                raise DistributeError(f"{what}: {type(exc).__name__}: {exc}") from exc
            delay = policy.backoff(attempt)
        else:
            if response.status_code not in RETRY_STATUSES or last:
                return response
            asked = retry_after(response)
            delay = policy.backoff(attempt) if asked is None else min(asked, policy.cap)
            await response.aclose()
        await anyio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
