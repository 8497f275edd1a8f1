"""S3 clients from botocore's own credential/endpoint chain, and which S3 failures are worth another attempt.

botocore's own retries are switched off (``total_max_attempts=1``) so that the runtime's one retry
(:func:`aib_sdk.runtime.retrying`, through :func:`with_retries`) applies everywhere: the same backoff as every
other provider on throttling, 5xx and connection errors. Only the S3-specific question (is this error transient?)
lives here. aioboto3 and botocore are imported inside functions only.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import anyio

from aib_provider_s3_vhd.settings import S3Settings
from aib_sdk.runtime import RetryPolicy, cleanup_scope, first_error, retrying

T = TypeVar("T")

_RETRY_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
    }
)
_COPY_UNSUPPORTED = frozenset(
    {
        "NotImplemented",
        "AccessDenied",
        "InvalidRequest",
        "XAmzContentSHA256Mismatch",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "CrossLocationLoggingProhibited",
        "501",
    }
)


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status or 0)
    return 0


def is_retryable(exc: BaseException) -> bool:
    """Throttling, a 5xx answer, a timeout or a broken connection: worth another attempt."""
    from botocore.exceptions import ClientError, HTTPClientError, ResponseStreamingError

    if isinstance(exc, ClientError):
        status = http_status(exc)
        return status >= 500 or status == 429 or error_code(exc) in _RETRY_CODES
    if isinstance(exc, HTTPClientError | ResponseStreamingError | TimeoutError | ConnectionError):
        return True
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiobotocore depends on aiohttp
        return False
    return isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)


def copy_unsupported(exc: BaseException) -> bool:
    """The endpoint refuses server-side copy between these buckets (so upload instead)."""
    exc = first_error(exc)
    return error_code(exc) in _COPY_UNSUPPORTED or http_status(exc) in (400, 403, 501)


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a failed request."""
    exc = first_error(exc)
    code = error_code(exc)
    if code:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")) or "no message"
        return f"{code} (HTTP {http_status(exc)}): {message}"
    return f"{type(exc).__name__}: {exc}"


def retry_policy(settings: S3Settings) -> RetryPolicy:
    """The runtime's retry policy with the provider's settings (``max_attempts``, ``retry_*_delay``)."""
    return RetryPolicy(attempts=settings.max_attempts, base=settings.retry_base_delay, cap=settings.retry_max_delay)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    settings: S3Settings,
    *,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await ``call()`` under the runtime's one retry, with S3's notion of a transient error."""
    return await retrying(
        lambda _attempt: call(), policy=retry_policy(settings), retryable=is_retryable, on_retry=on_retry
    )


@dataclass(frozen=True)
class Endpoint:
    """Where a bucket lives: the region name and an explicit endpoint URL (``None``: botocore's chain)."""

    region: str | None
    url: str | None = None


class ClientPool:
    """S3 clients, one per :class:`Endpoint`, opened on first use and closed together.

    Credentials, ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_REGION`` and profiles come from botocore's
    chain; an explicit ``endpointUrl`` wins over them. TLS verification stays on.
    """

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._clients: dict[Endpoint, Any] = {}
        self._session: Any = None
        self._lock = anyio.Lock()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with cleanup_scope(30):
            await self._stack.aclose()

    async def client(self, endpoint: Endpoint) -> Any:
        async with self._lock:
            existing = self._clients.get(endpoint)
            if existing is not None:
                return existing
            import aioboto3
            from botocore.config import Config as BotoConfig

            if self._session is None:
                self._session = aioboto3.Session(profile_name=self.settings.profile)
            config = BotoConfig(
                max_pool_connections=max(10, 2 * self.settings.max_concurrency),
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=self.settings.connect_timeout,
                read_timeout=self.settings.read_timeout,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                user_agent_extra="aib-sdk",
            )
            # botocore itself reads AWS_DEFAULT_REGION and profiles; AWS_REGION (the newer SDKs' name) goes first
            region = endpoint.region or os.environ.get("AWS_REGION") or None
            client = await self._stack.enter_async_context(
                self._session.client("s3", region_name=region, endpoint_url=endpoint.url, config=config)
            )
            self._clients[endpoint] = client
            return client


def copy_domain(client: Any) -> str:
    """Buckets reachable by server-side copy from each other share a domain: one AWS partition, or one endpoint."""
    url = str(client.meta.endpoint_url)
    host = (urlparse(url).hostname or "").lower()
    if host.endswith(".amazonaws.com"):
        return "aws"
    if host.endswith(".amazonaws.com.cn"):
        return "aws-cn"
    return url.rstrip("/")
