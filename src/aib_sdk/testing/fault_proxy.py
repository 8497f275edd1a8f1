"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1 (a test server): forwards requests to an upstream (moto,
Azurite …) and lets a *gate* fail one with an HTTP status, reset its connection, or hold it forever.

```python
async def gate(seen: Seen) -> int | str | None:   # None: forward; 503: fail it; "reset": drop the connection
    return 503 if seen.method == "PUT" and "comp=page" in seen.target else None

async with fault_proxy(upstream_url, gate) as proxy:   # proxy.url, proxy.seen
    ...
```
One request per connection (it answers ``Connection: close``); bodies with ``Content-Length`` only.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import anyio
import anyio.abc
from anyio.abc import SocketStream


@dataclass
class Seen:
    """One request the proxy received (with the S3 request shapes tests ask about)."""

    method: str
    target: str
    headers: dict[str, str]
    size: int
    body_sha256: str = ""
    """The body's SHA-256, base64 (as ``x-amz-checksum-sha256`` spells it)."""

    @property
    def is_upload_part(self) -> bool:
        return self.method == "PUT" and "partNumber=" in self.target and "x-amz-copy-source" not in self.headers

    @property
    def is_upload_part_copy(self) -> bool:
        return self.method == "PUT" and "partNumber=" in self.target and "x-amz-copy-source" in self.headers

    @property
    def is_copy(self) -> bool:
        return self.method == "PUT" and "x-amz-copy-source" in self.headers

    @property
    def is_create_upload(self) -> bool:
        return self.method == "POST" and "?uploads" in self.target and "uploadId=" not in self.target


Gate = Callable[[Seen], Awaitable[int | str | None]]


async def forward_all(_: Seen) -> int | str | None:
    return None


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    gate: Gate = forward_all
    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.url = f"http://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
        task_status.started(self.url)
        await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await self._exchange(client)

    async def _exchange(self, client: SocketStream) -> None:
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += await client.receive(65536)
        head, rest = bytes(buf).split(b"\r\n\r\n", 1)
        body = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            await client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += await client.receive(1 << 20)
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        seen = Seen(method, target, headers, len(body), digest)
        self.seen.append(seen)
        verdict = await self.gate(seen)
        if verdict == "reset":
            return  # the connection closes without an answer
        if isinstance(verdict, int):
            xml = (
                b"<?xml version='1.0'?><Error><Code>InternalError</Code>"
                b"<Message>injected by the test proxy</Message></Error>"
            )
            await client.send(
                f"HTTP/1.1 {verdict} Injected\r\nContent-Type: application/xml\r\nContent-Length: {len(xml)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + xml
            )
            return
        kept = [ln for ln in lines[1:] if ln.split(":", 1)[0].strip().lower() not in ("connection", "expect")]
        request = "\r\n".join([lines[0], *kept, "Connection: close"]).encode("latin-1") + b"\r\n\r\n" + body
        async with await anyio.connect_tcp(*self.upstream) as upstream:
            await upstream.send(bytes(request))
            response = bytearray()
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    response += await upstream.receive(1 << 20)
        await client.send(bytes(response))


@asynccontextmanager
async def fault_proxy(upstream_url: str, gate: Gate = forward_all) -> AsyncIterator[FaultProxy]:
    """A running :class:`FaultProxy` in front of ``upstream_url`` (``http://host:port``)."""
    host, port = upstream_url.removeprefix("http://").split("/")[0].split(":")
    proxy = FaultProxy((host, int(port)), gate)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
