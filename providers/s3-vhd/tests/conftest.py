"""Fixtures for the S3 provider tests: a real moto S3 server over HTTP, buckets in several regions, images, and
a fault-injecting HTTP proxy (a *test server*: it forwards to moto and fails or holds requests on purpose)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aib_sdk import disks
from aib_sdk.artifacts import Artifact
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.testing.fakes import make_run_context
from aib_sdk.testing.fault_proxy import fault_proxy
from aib_sdk.testing.moto import moto_server
from aib_sdk.testing.recorder import EventRecorder

MiB = 1024 * 1024


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto S3 server in a subprocess on 127.0.0.1, stopped by PID at the end of the session."""
    with moto_server() as url:
        yield url


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


@pytest.fixture
def proxy_factory() -> Callable[..., object]:
    """``async with proxy_factory(upstream_url, gate) as proxy`` runs a :class:`FaultProxy` for the block."""
    return fault_proxy
