"""Failures against moto behind the fault-injecting test proxy: 500s retried, a region that keeps failing aborts
its multipart upload and names itself, and a cancelled publish leaves no multipart upload behind."""

from __future__ import annotations

import anyio
import pytest

from aib_provider_s3_vhd.distributors import S3ImagePublisher
from aib_provider_s3_vhd.specs import S3ImageDistributor
from aib_sdk.errors import DistributeError
from aib_sdk.events import LogLine, TargetStatus

pytestmark = pytest.mark.anyio


def spec(regions: list[dict], key: str = "img/disk.raw") -> S3ImageDistributor:
    return S3ImageDistributor.model_validate(
        {"type": "S3Image", "runOutputName": "web", "regions": regions, "key": key, "format": "raw"}
    )


async def test_failed_parts_are_retried(s3lab, make_ctx, raw_artifact, events, proxy_factory):
    failures = {"left": 2}

    async def gate(seen):
        if seen.is_upload_part and failures["left"]:
            failures["left"] -= 1
            return 500
        return None

    bucket = await s3lab.bucket("eu-west-1")
    async with proxy_factory(s3lab.url, gate) as proxy:
        await S3ImagePublisher().publish(
            raw_artifact, spec([{"bucket": bucket, "region": "eu-west-1", "endpointUrl": proxy.url}]), make_ctx()
        )
    assert failures["left"] == 0
    assert len([s for s in proxy.seen if s.is_upload_part]) == 3 + 2  # three parts, two of them sent twice
    assert await s3lab.get(bucket, "img/disk.raw", "eu-west-1") == raw_artifact.path.read_bytes()
    retries = [e for e in events.of_kind(LogLine) if "retrying after InternalError (HTTP 500)" in e.line]
    assert len(retries) == 2


async def test_region_that_keeps_failing_is_aborted_and_named(s3lab, make_ctx, raw_artifact, events, proxy_factory):
    """us-west-2 goes through the proxy, which fails every UploadPart; eu-west-1 talks to moto directly."""

    async def gate(seen):
        return 503 if seen.is_upload_part else None

    eu, us = await s3lab.bucket("eu-west-1"), await s3lab.bucket("us-west-2")
    async with proxy_factory(s3lab.url, gate) as proxy:
        target = spec(
            [{"bucket": eu, "region": "eu-west-1"}, {"bucket": us, "region": "us-west-2", "endpointUrl": proxy.url}]
        )
        with pytest.raises(DistributeError) as info:
            await S3ImagePublisher().publish(raw_artifact, target, make_ctx(max_attempts=3))
    message = str(info.value)
    assert "region us-west-2" in message and f"s3://{us}/img/disk.raw" in message
    assert "succeeded: eu-west-1" in message
    assert "InternalError (HTTP 503): injected by the test proxy" in message
    assert await s3lab.uploads(us, "us-west-2") == []
    assert await s3lab.keys(us, "us-west-2") == []
    assert await s3lab.get(eu, "img/disk.raw", "eu-west-1") == raw_artifact.path.read_bytes()
    assert any(s.method == "DELETE" and "uploadId=" in s.target for s in proxy.seen)  # AbortMultipartUpload
    states = {e.region: e.state for e in events.of_kind(TargetStatus)}
    assert states == {"eu-west-1": "Succeeded", "us-west-2": "Failed"}


async def test_cancelled_publish_aborts_every_upload(s3lab, make_ctx, raw_artifact, events, proxy_factory):
    """UploadPart requests are held by the proxy; once one arrives, the publish is cancelled."""
    part_arrived = anyio.Event()

    async def gate(seen):
        if seen.is_upload_part:
            part_arrived.set()
            await anyio.sleep_forever()
        return None

    eu, us = await s3lab.bucket("eu-west-1"), await s3lab.bucket("us-west-2")
    async with proxy_factory(s3lab.url, gate) as proxy:
        target = spec(
            [
                {"bucket": eu, "region": "eu-west-1", "endpointUrl": proxy.url},
                {"bucket": us, "region": "us-west-2", "endpointUrl": proxy.url},
            ]
        )
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(S3ImagePublisher().publish, raw_artifact, target, make_ctx(replication="upload"))
                await part_arrived.wait()
                await anyio.sleep(0.2)
                tg.cancel_scope.cancel()
    for bucket, region in ((eu, "eu-west-1"), (us, "us-west-2")):
        assert await s3lab.uploads(bucket, region) == []
        assert await s3lab.keys(bucket, region) == []
    aborts = [s for s in proxy.seen if s.method == "DELETE" and "uploadId=" in s.target]
    assert len(aborts) == 2
    assert {e.region for e in events.of_kind(TargetStatus) if e.state == "Canceled"} == {"eu-west-1", "us-west-2"}
