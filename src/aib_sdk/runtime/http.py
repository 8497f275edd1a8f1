"""The one retrying HTTP client: an httpx transport that retries, and the client every provider builds on it.

- :class:`RetryTransport` wraps any ``httpx.AsyncBaseTransport`` (httpx's own seam): 408/425/429/5xx answers and
  connection failures are retried by :func:`~aib_sdk.runtime.retry.retrying`, ``Retry-After`` honoured. A request
  whose body cannot be replayed (a streamed upload) is retried only when it never reached the server.
- :func:`http_client` builds an ``httpx.AsyncClient`` on it. An embedder injects its own transport with
  ``BuildOptions(http_transport=…)`` (a mock, a proxy, an instrumented pool); providers reach it through
  :meth:`aib_sdk.context.RunContext.http_client`, so every provider's traffic goes through it.
- :func:`send_with_retry` is for requests that must be rebuilt per attempt (re-signed with a fresh date or token).

TLS verification cannot be turned off: give a CA bundle instead.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import httpx

from aib_sdk.errors import UsageError

from .retry import DEFAULT_POLICY, RETRY_STATUS, RetryableError, RetryPolicy, retry_after, retrying

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=20.0)
USER_AGENT = "aib-sdk"

# Failures after which a replayable request may be sent again.
_TRANSIENT: tuple[type[Exception], ...] = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Failures that happen before a request's body is sent (safe to retry even for a streamed body).
_NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

RetryHook = Callable[[int, BaseException, float], None]


def is_transient(exc: BaseException) -> bool:
    """A timeout, a reset or refused connection, or a server that closed the connection mid-answer."""
    return isinstance(exc, _TRANSIENT)


class _RetryStatus(RetryableError):
    def __init__(self, response: httpx.Response) -> None:
        reason = f"HTTP {response.status_code} {response.reason_phrase}"
        super().__init__(reason, retry_after=retry_after(response.headers))
        self.status_code = response.status_code


class RetryTransport(httpx.AsyncBaseTransport):
    """Retries what is worth retrying around ``inner``; the final answer, whatever its status, is returned.

    When every attempt fails to connect, the last ``httpx.TransportError`` is raised as itself. ``owns_inner``:
    whether closing this transport closes ``inner`` (not for a transport an embedder injected and shares).
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        policy: RetryPolicy = DEFAULT_POLICY,
        *,
        owns_inner: bool = True,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.owns_inner = owns_inner
        self.on_retry = on_retry

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        replayable = isinstance(request.stream, httpx.ByteStream)
        last = max(1, self.policy.attempts)

        async def once(attempt: int) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if replayable and attempt < last and response.status_code in RETRY_STATUS:
                await response.aclose()
                raise _RetryStatus(response)
            return response

        def worth_it(exc: BaseException) -> bool:
            return isinstance(exc, _NOT_SENT) or (replayable and is_transient(exc))

        return await retrying(once, policy=self.policy, retryable=worth_it, on_retry=self.on_retry)

    async def aclose(self) -> None:
        if self.owns_inner:
            await self.inner.aclose()


def _verify(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext | str | bool:
    if verify is False:
        raise UsageError("TLS verification cannot be turned off; give a CA bundle instead")
    return verify


def http_client(
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    retry: bool = True,
    verify: ssl.SSLContext | str | bool = True,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    limits: httpx.Limits | None = None,
    follow_redirects: bool = True,
    headers: dict[str, str] | None = None,
    on_retry: RetryHook | None = None,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose requests go through :class:`RetryTransport` (unless ``retry=False``, for
    callers that retry with :func:`send_with_retry`).

    ``transport``: the embedder's transport (then ``verify`` and ``limits`` are its business, as in httpx);
    otherwise httpx's own, with ``verify`` (a CA bundle path or an ``SSLContext``) and ``limits``.
    """
    injected = transport is not None
    inner = transport or httpx.AsyncHTTPTransport(verify=_verify(verify), limits=limits or httpx.Limits())
    outer: httpx.AsyncBaseTransport = _Borrowed(inner, injected)
    if retry:
        outer = RetryTransport(inner, policy, owns_inner=not injected, on_retry=on_retry)
    return httpx.AsyncClient(
        transport=outer,
        timeout=timeout,
        follow_redirects=follow_redirects,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
    )


class _Borrowed(httpx.AsyncBaseTransport):
    """``inner`` as is, not closed with the client when an embedder injected it."""

    def __init__(self, inner: httpx.AsyncBaseTransport, injected: bool) -> None:
        self.inner, self.injected = inner, injected

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        if not self.injected:
            await self.inner.aclose()


async def send_with_retry(
    client: httpx.AsyncClient,
    build: Callable[[], Awaitable[httpx.Request]],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    error: Callable[[str], Exception] | None = None,
) -> httpx.Response:
    """Send the request ``build()`` makes (rebuilt, so re-signed, on each attempt); return the final response.

    The same policy and statuses as :class:`RetryTransport`; when the transport keeps failing, ``error(message)``
    is raised (``from`` the last failure), by default ``httpx.TransportError`` itself.
    """
    last = max(1, policy.attempts)

    async def once(attempt: int) -> httpx.Response:
        response = await client.send(await build())
        if attempt < last and response.status_code in RETRY_STATUS:
            await response.aclose()
            raise _RetryStatus(response)
        return response

    try:
        return await retrying(once, policy=policy, retryable=is_transient)
    except httpx.TransportError as exc:
        if error is None:
            raise
        raise error(f"{what}: {type(exc).__name__}: {exc}") from exc
