"""Multipart uploads are journaled (before CreateMultipartUpload; the upload id once known) and ``aib gc`` aborts
the ones a dead builder left open — against moto, behind the fault-injecting proxy where a part must hang."""

from __future__ import annotations

import anyio
import pytest

import aib_provider_s3_vhd.hooks as hooks
from aib_provider_s3_vhd.distributors import S3ImagePublisher
from aib_provider_s3_vhd.specs import S3ImageDistributor
from aib_sdk.gc import collect_garbage
from aib_sdk.journal import JOURNAL_NAME, Journal, Owner, process_start_time, read_journal
from aib_sdk.plugins.manager import PluginManager
from aib_sdk.staging import create_staging

pytestmark = pytest.mark.anyio


def spec(bucket: str, endpoint: str) -> S3ImageDistributor:
    return S3ImageDistributor.model_validate(
        {
            "type": "S3Image",
            "runOutputName": "web",
            "regions": [{"bucket": bucket, "region": "eu-west-1", "endpointUrl": endpoint}],
            "key": "img/disk.raw",
            "format": "raw",
        }
    )


async def test_open_upload_is_journaled_and_gc_aborts_it_after_the_builder_died(
    s3lab, make_ctx, raw_artifact, proxy_factory
):
    part_arrived = anyio.Event()

    async def gate(seen):
        if seen.is_upload_part:
            part_arrived.set()
            await anyio.sleep_forever()
        return None

    bucket = await s3lab.bucket("eu-west-1")
    ctx = make_ctx()
    ctx.journal = Journal.create(ctx.staging.run_directory, run_id=ctx.run_id, template_name="t")
    journal_file = ctx.staging.run_directory / JOURNAL_NAME
    async with proxy_factory(s3lab.url, gate) as proxy:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(S3ImagePublisher().publish, raw_artifact, spec(bucket, proxy.url), ctx)
                await part_arrived.wait()
                [entry] = read_journal(journal_file).open_entries  # what a kill -9 right now would leave
                tg.cancel_scope.cancel()
    assert entry.kind == "s3.multipart" and entry.data["key"] == "img/disk.raw" and entry.data["uploadId"]
    assert not read_journal(journal_file).open_entries  # the cancelled publish aborted it and said so
    assert await s3lab.uploads(bucket, "eu-west-1") == []

    # Now as if the builder had been killed: a dead owner, one upload with its id, one whose id never got journaled.
    async with s3lab.client("eu-west-1") as s3:
        known = await s3.create_multipart_upload(Bucket=bucket, Key="img/known.raw")
        unknown = await s3.create_multipart_upload(Bucket=bucket, Key="img/unknown.raw")
        other = await s3.create_multipart_upload(Bucket=bucket, Key="img/other.raw")
    config = make_ctx().config
    staging = await create_staging(config, "t", "ab" * 32, "20260101T000000Z-abcdef")
    proc = await anyio.open_process(["true"])
    start = process_start_time(proc.pid)
    await proc.wait()
    me = Owner.current()
    journal = Journal(staging.run_directory / JOURNAL_NAME)
    journal.append({"op": "owner", **Owner(proc.pid, start, me.boot, me.host).to_json(), "runId": "dead"})
    for key in ("img/known.raw", "img/unknown.raw"):
        entry_id = journal.acquire_sync(
            "s3.multipart",
            {
                "bucket": bucket,
                "key": key,
                "endpointUrl": s3lab.url,
                "region": "eu-west-1",
                "since": entry.data["since"],
            },
            f"multipart upload to s3://{bucket}/{key}",
        )
        if key == "img/known.raw":
            journal.update_sync(entry_id, {"uploadId": known["UploadId"]})
    [run] = await collect_garbage(config, PluginManager(entry_points=False, plugins=[hooks]))
    text = "\n".join(run.lines())
    assert run.ok, text
    assert f"aborted multipart upload(s) {known['UploadId']} of s3://{bucket}/img/known.raw" in text
    # Without its id, only an upload of that key begun within two minutes of the entry would be aborted; moto
    # dates every upload 2010-11-10, so this one counts as someone else's and is left alone (never a live run's).
    assert f"no multipart upload of s3://{bucket}/img/unknown.raw was open" in text
    left = {u["UploadId"] for u in await s3lab.uploads(bucket, "eu-west-1")}
    assert left == {unknown["UploadId"], other["UploadId"]}
