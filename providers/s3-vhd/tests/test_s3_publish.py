"""Publishing to several regions of moto's S3 server over real HTTP: content, metadata, checksums, replication
by server-side copy, skipping an identical object, and the VHD claim on ``s3://`` URIs."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import pytest

from aib_provider_s3_vhd import hooks
from aib_provider_s3_vhd.distributors import S3ImagePublisher, S3VhdPublisher
from aib_provider_s3_vhd.parts import part_size_for, plan_parts
from aib_provider_s3_vhd.specs import S3ImageDistributor
from aib_sdk.config import Config
from aib_sdk.disks import sha256_file
from aib_sdk.events import Progress, TargetStatus
from aib_sdk.models.specs import VhdDistributor
from aib_sdk.plugins.manager import PluginManager

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


def via(endpoint_url: str, *targets: tuple[str, str]) -> list[dict]:
    """``regions[]`` of an S3Image spec: each ``(bucket, region)`` reached through ``endpoint_url``."""
    return [{"bucket": bucket, "region": region, "endpointUrl": endpoint_url} for bucket, region in targets]


def s3image(regions: list[dict], key: str = "images/web/1.0.0/disk.vhd", **extra: object) -> S3ImageDistributor:
    return S3ImageDistributor.model_validate(
        {"type": "S3Image", "runOutputName": "web-s3", "regions": regions, "key": key, **extra}
    )


async def test_two_regions_upload_byte_identical_with_checksums(s3lab, make_ctx, raw_artifact, events, proxy_factory):
    """Each region gets its own multipart upload; every part carries a correct SHA-256 checksum."""
    eu, us = await s3lab.bucket("eu-west-1"), await s3lab.bucket("us-west-2")
    async with proxy_factory(s3lab.url) as proxy:
        spec = s3image(
            via(proxy.url, (eu, "eu-west-1"), (us, "us-west-2")),
            key="images/web.raw",
            format="raw",
            artifactTags={"team": "platform"},
            metadata={"build": "42"},
        )
        out = await S3ImagePublisher().publish(raw_artifact, spec, make_ctx(replication="upload"))

    data = raw_artifact.path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert out.artifact_uri == f"s3://{eu}/images/web.raw"
    assert out.regions == {"eu-west-1": f"s3://{eu}/images/web.raw", "us-west-2": f"s3://{us}/images/web.raw"}
    for bucket, region in ((eu, "eu-west-1"), (us, "us-west-2")):
        assert await s3lab.get(bucket, "images/web.raw", region) == data
        head = await s3lab.head(bucket, "images/web.raw", region)
        assert head["Metadata"]["sha256"] == digest
        assert head["Metadata"]["aib-template-digest"] == "d" * 64
        assert head["Metadata"]["aib-run-id"] == "run-0001"
        assert head["Metadata"]["aib-format"] == "raw"
        assert head["Metadata"]["build"] == "42"
        assert head["TagCount"] == 1
        assert await s3lab.uploads(bucket, region) == []

    parts = [s for s in proxy.seen if s.is_upload_part]
    expected_parts = math.ceil(len(data) / part_size_for(len(data)))
    assert len(parts) == 2 * expected_parts == 6
    assert all(p.headers["x-amz-checksum-sha256"] == p.body_sha256 for p in parts)
    creates = [s for s in proxy.seen if s.is_create_upload]
    assert len(creates) == 2 and all(c.headers["x-amz-checksum-algorithm"] == "SHA256" for c in creates)
    assert not any(s.is_upload_part_copy for s in proxy.seen)

    statuses = {(e.region, e.state) for e in events.of_kind(TargetStatus)}
    assert {("eu-west-1", "Succeeded"), ("us-west-2", "Succeeded")} <= statuses
    for region in ("eu-west-1", "us-west-2"):
        last = [p for p in events.of_kind(Progress) if p.region == region and p.task == "upload"][-1]
        assert (last.done, last.total, last.target) == (len(data), len(data), "web-s3")


@pytest.mark.parametrize("single_copy_max_mb", [5120, 8])
async def test_second_region_is_filled_by_server_side_copy(
    s3lab, make_ctx, vhd_artifact, proxy_factory, single_copy_max_mb
):
    """With ``replication = copy``, one region is uploaded and the other copied: by one CopyObject up to
    ``single_copy_max``, by UploadPartCopy of each part above it (then the ETags match too)."""
    eu, us = await s3lab.bucket("eu-west-1"), await s3lab.bucket("us-west-2")
    async with proxy_factory(s3lab.url) as proxy:
        spec = s3image(
            via(proxy.url, (eu, "eu-west-1"), (us, "us-west-2")),
            artifactTags={"a": "b"},
        )
        ctx = make_ctx(replication="copy", single_copy_max_mb=single_copy_max_mb)
        out = await S3ImagePublisher().publish(vhd_artifact, spec, ctx)
    vhd = vhd_artifact.conversions["vhd"]
    size = vhd.stat().st_size
    assert size == 20 * MiB + 512  # a fixed VHD: the disk plus its footer
    part_copies = [s for s in proxy.seen if s.is_upload_part_copy]
    whole_copies = [
        s
        for s in proxy.seen
        if s.method == "PUT" and "x-amz-copy-source" in s.headers and "partNumber=" not in s.target
    ]
    uploads = [s for s in proxy.seen if s.is_upload_part]
    n_parts = len(plan_parts(size, part_size_for(size)))
    assert len(uploads) == n_parts
    if single_copy_max_mb > 20:
        assert (len(whole_copies), len(part_copies)) == (1, 0)
        assert whole_copies[0].headers["x-amz-metadata-directive"] == "REPLACE"
    else:
        assert (len(whole_copies), len(part_copies)) == (0, n_parts)
    assert all(s.headers["x-amz-copy-source-if-match"] for s in whole_copies + part_copies)
    a = await s3lab.head(eu, "images/web/1.0.0/disk.vhd", "eu-west-1")
    b = await s3lab.head(us, "images/web/1.0.0/disk.vhd", "us-west-2")
    assert a["Metadata"] == b["Metadata"] and b["Metadata"]["sha256"] == await sha256_file(vhd)
    assert b["Metadata"]["aib-format"] == "vhd" and b["TagCount"] == 1
    if single_copy_max_mb <= 20:
        assert a["ETag"] == b["ETag"]
    assert await s3lab.get(us, "images/web/1.0.0/disk.vhd", "us-west-2") == vhd.read_bytes()
    assert set(out.regions) == {"eu-west-1", "us-west-2"}


async def test_identical_object_is_not_uploaded_again(s3lab, make_ctx, raw_artifact, events, proxy_factory):
    eu, us = await s3lab.bucket("eu-west-1"), await s3lab.bucket("us-west-2")
    async with proxy_factory(s3lab.url) as proxy:
        spec = s3image(
            via(proxy.url, (eu, "eu-west-1"), (us, "us-west-2")),
            key="a/b.raw",
            format="raw",
        )
        await S3ImagePublisher().publish(raw_artifact, spec, make_ctx())
        first = len(proxy.seen)
        events.clear()
        out = await S3ImagePublisher().publish(raw_artifact, spec, make_ctx())
        second = proxy.seen[first:]
    assert [s.method for s in second] == ["HEAD", "HEAD"]
    done = [e for e in events.of_kind(TargetStatus) if e.state == "Succeeded"]
    assert len(done) == 2 and all(e.message.startswith("skipped") for e in done)
    assert out.artifact_uri == f"s3://{eu}/a/b.raw"

    # A region that already holds the image is the copy source for a new region: nothing is uploaded.
    third = await s3lab.bucket("ap-southeast-2")
    async with proxy_factory(s3lab.url) as proxy:
        spec = s3image(
            via(proxy.url, (eu, "eu-west-1"), (third, "ap-southeast-2")),
            key="a/b.raw",
            format="raw",
        )
        await S3ImagePublisher().publish(raw_artifact, spec, make_ctx(replication="copy"))
    assert not any(s.is_upload_part for s in proxy.seen)
    assert [s.headers["x-amz-copy-source"] for s in proxy.seen if "x-amz-copy-source" in s.headers] == [f"{eu}/a/b.raw"]
    assert await s3lab.get(third, "a/b.raw", "ap-southeast-2") == raw_artifact.path.read_bytes()

    # A changed image (a later run's artifact) under the same key is uploaded again.
    with open(raw_artifact.path, "r+b") as fh:
        fh.write(b"changed!")
    changed = dataclasses.replace(raw_artifact, digests={}, conversions={})
    async with proxy_factory(s3lab.url) as proxy:
        spec = s3image(via(proxy.url, (eu, "eu-west-1")), key="a/b.raw", format="raw")
        await S3ImagePublisher().publish(changed, spec, make_ctx())
    assert any(s.is_upload_part for s in proxy.seen)
    assert (await s3lab.get(eu, "a/b.raw", "eu-west-1"))[:8] == b"changed!"


async def test_vhd_to_s3_uses_botocore_chain_and_is_routed_here(s3lab, make_ctx, vhd_artifact, monkeypatch):
    """AIB's VHD with an s3:// URI: endpoint from AWS_ENDPOINT_URL_S3 and region from AWS_REGION."""
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    bucket = await s3lab.bucket("eu-west-1")
    spec = VhdDistributor.model_validate({"type": "VHD", "runOutputName": "vhd", "uri": f"s3://{bucket}/out/x.vhd"})
    pm = PluginManager(entry_points=False, plugins=[hooks])
    assert pm.distributor_for(spec, Config({}, {})) is S3VhdPublisher
    out = await S3VhdPublisher().publish(vhd_artifact, spec, make_ctx())
    assert out.artifact_uri == f"s3://{bucket}/out/x.vhd"
    assert out.regions == {"eu-west-1": f"s3://{bucket}/out/x.vhd"}
    assert await s3lab.get(bucket, "out/x.vhd", "eu-west-1") == vhd_artifact.conversions["vhd"].read_bytes()


def test_vhd_claims_only_s3_uris():
    cfg = Config({}, {})

    def vhd(uri: str | None) -> VhdDistributor:
        return VhdDistributor.model_validate({"type": "VHD", "runOutputName": "o", **({"uri": uri} if uri else {})})

    assert S3VhdPublisher.claims(vhd("s3://bucket/disk.vhd"), cfg)
    assert S3VhdPublisher.claims(vhd("S3://bucket/disk.vhd"), cfg)
    assert not S3VhdPublisher.claims(vhd("file:///tmp/disk.vhd"), cfg)
    assert not S3VhdPublisher.claims(vhd("https://acct.blob.core.windows.net/c/disk.vhd"), cfg)
    assert not S3VhdPublisher.claims(vhd(None), cfg)
    pm = PluginManager(entry_points=False, plugins=[hooks])
    with pytest.raises(Exception, match="no installed provider publishes VHD"):
        pm.distributor_for(vhd("https://acct.blob.core.windows.net/c/disk.vhd"), cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key": "../etc/passwd"}, "segments"),
        ({"key": "a/./b"}, "segments"),
        ({"key": "/abs"}, "must not start"),
        ({"regions": []}, "at least 1"),
        ({"metadata": {"sha256": "x"}}, "written by aib-sdk"),
        ({"format": "vmdk"}, "format"),
        ({"regions": [{"bucket": "Bad_Bucket", "region": "eu-west-1"}]}, "bucket"),
        ({"regions": [{"bucket": "good-bucket", "region": "eu-west-1", "endpointUrl": "ftp://x"}]}, "endpoint"),
        ({"regions": [{"bucket": "abc", "region": "eu-west-1"}, {"bucket": "abc", "region": "us-west-2"}]}, "twice"),
        ({"storageClass": "cheap"}, "storageClass"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_s3image_spec_rejects_bad_input(change, message):
    base = {
        "type": "S3Image",
        "runOutputName": "o",
        "regions": [{"bucket": "abc", "region": "eu-west-1"}],
        "key": "k.vhd",
    }
    with pytest.raises(ValueError, match=message):
        S3ImageDistributor.model_validate({**base, **change})


def test_part_sizes_respect_s3_limits():
    assert part_size_for(20 * MiB) == 8 * MiB
    huge = 200 * 1024 * MiB  # 200 GiB
    size = part_size_for(huge)
    assert size % MiB == 0 and math.ceil(huge / size) <= 10_000
    parts = plan_parts(huge, size)
    assert parts[-1].offset + parts[-1].size == huge and len(parts) <= 10_000
    assert plan_parts(20 * MiB, 8 * MiB)[-1].byte_range == f"bytes={16 * MiB}-{20 * MiB - 1}"


def test_importing_the_provider_does_not_import_botocore():
    import subprocess
    import sys

    code = (
        "import sys, aib_provider_s3_vhd.hooks, aib_provider_s3_vhd.distributors, aib_provider_s3_vhd.source; "
        "print(sorted(m for m in ('botocore', 'aioboto3', 'aiobotocore') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
