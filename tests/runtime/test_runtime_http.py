"""The one retry and the retrying HTTP client, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from aib_sdk.errors import DistributeError, UsageError
from aib_sdk.options import BuildOptions
from aib_sdk.runtime import RetriesExhausted, RetryableError, RetryPolicy, retry_after, retrying
from aib_sdk.runtime.http import http_client, send_with_retry
from aib_sdk.testing.fakes import make_run_context

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05)


@dataclass
class Server:
    """Answers ``/fail/N/STATUS`` with STATUS N times, then 200; ``/status/S`` always with S."""

    port: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.bodies.append(self.rfile.read(length) if length else b"")
            state.hits[self.path] = seen = state.hits.get(self.path, 0) + 1
            parts = self.path.strip("/").split("/")
            status = 200
            if parts[0] == "fail" and seen <= int(parts[1]):
                status = int(parts[2])
            elif parts[0] == "status":
                status = int(parts[1])
            self.send_response(status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_PUT = _answer

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_one_backoff_formula_with_jitter_and_cap() -> None:
    policy = RetryPolicy(attempts=9, base=1.0, cap=10.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0), (8, 10.0)]:
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
    assert policy.delay(1, asked=3.0) == 3.0
    assert policy.delay(1, asked=3600.0) == 10.0  # a server's wish is bounded too
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"x-ms-retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after({}) is None


async def test_retrying_retries_only_what_it_is_told_and_is_bounded() -> None:
    calls: list[int] = []

    async def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise ConnectionResetError("reset by peer")
        return "done"

    assert await retrying(flaky, policy=FAST, retryable=lambda e: isinstance(e, ConnectionError)) == "done"
    assert calls == [1, 2, 3]

    async def wrong(attempt: int) -> None:
        calls.append(attempt)
        raise ValueError("not transient")

    calls.clear()
    with pytest.raises(ValueError):
        await retrying(wrong, policy=FAST, retryable=lambda e: isinstance(e, ConnectionError))
    assert calls == [1]

    async def always(attempt: int) -> None:
        raise RetryableError("HTTP 503")

    told: list[int] = []
    with pytest.raises(RetriesExhausted, match="gave up after 4 attempts: HTTP 503") as info:
        await retrying(always, policy=FAST, on_retry=lambda n, exc, delay: told.append(n))
    assert told == [1, 2, 3] and isinstance(info.value.last, RetryableError)


async def test_client_retries_5xx_and_429_and_honours_retry_after(server: Server) -> None:
    async with http_client(policy=RetryPolicy(attempts=4, base=0.01, cap=5.0)) as client:
        response = await client.get(server.url("/fail/2/503"))
        assert response.status_code == 200 and server.hits["/fail/2/503"] == 3
        server.headers["Retry-After"] = "1"
        started = time.monotonic()
        response = await client.get(server.url("/fail/1/429"))
        assert response.status_code == 200 and time.monotonic() - started >= 0.9
        server.headers.clear()
        # a final 5xx is returned, not raised: the caller maps it
        response = await client.get(server.url("/status/500"))
        assert response.status_code == 500 and server.hits["/status/500"] == FAST.attempts
        response = await client.get(server.url("/status/404"))
        assert response.status_code == 404 and server.hits["/status/404"] == 1


async def test_connection_errors_are_retried_then_raised() -> None:
    told: list[int] = []
    async with http_client(policy=FAST, on_retry=lambda n, exc, delay: told.append(n)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("http://127.0.0.1:9/nothing")
    assert told == [1, 2, 3]


async def test_a_streamed_body_is_not_sent_twice(server: Server) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"page"

    async with http_client(policy=FAST) as client:
        response = await client.put(server.url("/fail/1/503"), content=body())
        assert response.status_code == 503 and server.hits["/fail/1/503"] == 1
        response = await client.put(server.url("/fail/1/500"), content=b"bytes are replayable")
        assert response.status_code == 200 and server.bodies[-1] == b"bytes are replayable"


async def test_tls_verification_cannot_be_turned_off() -> None:
    with pytest.raises(UsageError, match="CA bundle"):
        http_client(verify=False)


async def test_send_with_retry_rebuilds_each_attempt(server: Server) -> None:
    built: list[int] = []
    async with http_client(retry=False) as client:

        async def build() -> httpx.Request:
            built.append(len(built))
            return client.build_request("GET", server.url("/fail/2/502"), headers={"x-attempt": str(len(built))})

        response = await send_with_retry(client, build, what="GET thing", policy=FAST)
        assert response.status_code == 200 and built == [0, 1, 2]

        async def unreachable() -> httpx.Request:
            return client.build_request("GET", "http://127.0.0.1:9/x")

        with pytest.raises(DistributeError, match="GET x: ConnectError"):
            await send_with_retry(client, unreachable, what="GET x", policy=FAST, error=DistributeError)


async def test_an_injected_transport_carries_every_provider_request(tmp_path, server: Server) -> None:
    """``BuildOptions(http_transport=…)`` is httpx's seam: the run's clients and its fetcher go through it."""
    seen: list[str] = []
    inner = httpx.AsyncHTTPTransport()

    class Recording(httpx.AsyncBaseTransport):
        closed = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            return await inner.handle_async_request(request)

        async def aclose(self) -> None:
            self.closed = True

    transport = Recording()
    ctx = make_run_context(tmp_path, options=BuildOptions(http_transport=transport))
    async with ctx.http_client() as client:
        assert (await client.get(server.url("/fail/1/503"))).status_code == 200
    assert seen == ["/fail/1/503", "/fail/1/503"]  # retried around the injected transport
    assert not transport.closed  # the embedder's transport outlives the provider's client
    path = await ctx.fetch(server.url("/fail/1/504"))
    assert path.read_bytes() == b"ok" and seen[-2:] == ["/fail/1/504", "/fail/1/504"]
    await inner.aclose()
