"""Fixtures for the S3 provider tests: a real moto S3 server over HTTP, buckets in several regions, images, and
a fault-injecting HTTP proxy (a *test server*: it forwards to moto and fails or holds requests on purpose)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream, TaskStatus

from aib_sdk import disks
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.recorder import EventRecorder

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto S3 server in a subprocess on 127.0.0.1, stopped by PID at the end of the session."""
    exe = Path(sys.executable).with_name("moto_server")
    port = _free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Fake credentials and the moto endpoint through botocore's own chain (no profile files are read)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_url


@dataclass
class S3Lab:
    """Direct access to the moto server for arranging and checking (buckets are removed after the test)."""

    url: str
    buckets: list[tuple[str, str]] = field(default_factory=list)

    def client(self, region: str = "us-east-1"):
        import aioboto3

        return aioboto3.Session().client("s3", region_name=region, endpoint_url=self.url)

    async def bucket(self, region: str) -> str:
        name = f"aib-{region}-{uuid.uuid4().hex[:10]}"
        async with self.client(region) as s3:
            args = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            await s3.create_bucket(Bucket=name, **args)
        self.buckets.append((name, region))
        return name

    async def get(self, bucket: str, key: str, region: str = "us-east-1") -> bytes:
        async with self.client(region) as s3:
            response = await s3.get_object(Bucket=bucket, Key=key)
            data: bytes = await response["Body"].read()
            return data

    async def head(self, bucket: str, key: str, region: str = "us-east-1") -> dict:
        async with self.client(region) as s3:
            return await s3.head_object(Bucket=bucket, Key=key)

    async def uploads(self, bucket: str, region: str = "us-east-1") -> list[dict]:
        async with self.client(region) as s3:
            return (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])

    async def keys(self, bucket: str, region: str = "us-east-1") -> list[str]:
        async with self.client(region) as s3:
            return [o["Key"] for o in (await s3.list_objects_v2(Bucket=bucket)).get("Contents", [])]

    async def cleanup(self) -> None:
        for name, region in self.buckets:
            async with self.client(region) as s3:
                for upload in (await s3.list_multipart_uploads(Bucket=name)).get("Uploads", []):
                    await s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
                for key in [o["Key"] for o in (await s3.list_objects_v2(Bucket=name)).get("Contents", [])]:
                    await s3.delete_object(Bucket=name, Key=key)
                await s3.delete_bucket(Bucket=name)


@pytest.fixture
async def s3lab(aws_env: str) -> AsyncIterator[S3Lab]:
    lab = S3Lab(aws_env)
    yield lab
    await lab.cleanup()


@pytest.fixture
def events() -> EventRecorder:
    return EventRecorder()


@pytest.fixture
def make_ctx(tmp_path: Path, events: EventRecorder) -> Callable[..., RunContext]:
    """A real run context whose ``[s3-vhd]`` settings are given as keyword arguments (fast retries by default)."""

    def make(**settings: object) -> RunContext:
        table = {"retry_base_delay": 0.01, "retry_max_delay": 0.05, "max_attempts": 4, **settings}
        env = {"AIB_HOME": str(tmp_path / "home"), "AIB_CACHE": str(tmp_path / "cache")}
        return make_run_context(tmp_path, config=Config({"s3-vhd": table}, env), emit=events, run_id="run-0001")

    return make


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        left = size
        while left:
            n = min(left, 4 * MiB)
            fh.write(os.urandom(n))
            left -= n


@pytest.fixture
def raw_artifact(tmp_path: Path) -> Artifact:
    """A 20 MiB raw "disk" of random bytes (three 8 MiB parts, the last one short)."""
    path = tmp_path / "disk.raw"
    _random_file(path, 20 * MiB)
    return Artifact(
        path=path, format="raw", virtual_size=20 * MiB, template_digest="d" * 64, run_id="run-0001", template_name="web"
    )


@pytest.fixture
async def vhd_artifact(raw_artifact: Artifact, make_ctx: Callable[..., RunContext]) -> Artifact:
    """The raw disk with its fixed VHD conversion made (by :func:`aib_sdk.disks.converted`, as a publish would)."""
    await disks.converted(raw_artifact, "vhd", make_ctx())
    return raw_artifact


# The fault-injecting proxy (a test server) ---------------------------------------------------------------------


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    target: str
    headers: dict[str, str]
    body_sha256: str  # base64, as x-amz-checksum-sha256 spells it
    body_size: int

    @property
    def is_upload_part(self) -> bool:
        return self.method == "PUT" and "partNumber=" in self.target and "x-amz-copy-source" not in self.headers

    @property
    def is_upload_part_copy(self) -> bool:
        return self.method == "PUT" and "partNumber=" in self.target and "x-amz-copy-source" in self.headers

    @property
    def is_create_upload(self) -> bool:
        return self.method == "POST" and ("?uploads" in self.target) and "uploadId=" not in self.target


Gate = Callable[[Seen], Awaitable[int | None]]
"""Decides a request's fate: an HTTP status to fail it with (without forwarding), or None to forward it."""


async def _forward_all(_: Seen) -> int | None:
    return None


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of moto: records every request, fails or holds the ones ``gate``
    picks. One request per connection (it answers with ``Connection: close``)."""

    def __init__(self, upstream: str, gate: Gate = _forward_all) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.gate = gate
        self.seen: list[Seen] = []
        self.url = ""

    async def serve(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"http://127.0.0.1:{port}"
        task_status.started(self.url)
        await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        async with client:
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
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
        assert "chunked" not in headers.get("transfer-encoding", ""), "the proxy handles Content-Length bodies"
        if headers.get("expect", "").lower() == "100-continue":
            await client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            body += await client.receive(1 << 20)
        seen = Seen(method, target, headers, base64.b64encode(hashlib.sha256(body).digest()).decode(), len(body))
        self.seen.append(seen)
        status = await self.gate(seen)
        if status is not None:
            xml = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                b"<Message>injected by the test proxy</Message></Error>"
            )
            await client.send(
                f"HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {len(xml)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + xml
            )
            return
        kept = [ln for ln in lines[1:] if ln.split(":", 1)[0].strip().lower() not in ("connection", "expect")]
        request = "\r\n".join([lines[0], *kept, "Connection: close"]).encode("latin-1") + b"\r\n\r\n" + body
        async with await anyio.connect_tcp(*self.upstream) as upstream:
            await upstream.send(bytes(request))
            response = bytearray()
            try:
                while True:
                    response += await upstream.receive(1 << 20)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        await client.send(response)


@asynccontextmanager
async def running_proxy(upstream: str, gate: Gate = _forward_all) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream, gate)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


@pytest.fixture
def proxy_factory() -> Callable[..., object]:
    """``async with proxy_factory(upstream_url, gate) as proxy`` runs a :class:`FaultProxy` for the block."""
    return running_proxy
