"""The ``S3Image`` source against moto: ranged parallel download, sha256 verification, cache by digest."""

from __future__ import annotations

import hashlib

import anyio
import pytest

from aib_provider_s3_vhd import hooks
from aib_provider_s3_vhd.distributors import S3ImagePublisher
from aib_provider_s3_vhd.source import S3ImageResolver
from aib_provider_s3_vhd.specs import S3ImageDistributor, S3ImageSource
from aib_sdk.config import Config
from aib_sdk.errors import ChecksumError, SourceError
from aib_sdk.events import Progress
from aib_sdk.plugins.manager import PluginManager

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


async def publish_vhd(s3lab, make_ctx, artifact, *, windows: bool = False) -> str:
    bucket = await s3lab.bucket("eu-west-1")
    if windows:
        artifact.os_type, artifact.hyper_v_generation = "Windows", "V2"
    spec = S3ImageDistributor.model_validate(
        {
            "type": "S3Image",
            "runOutputName": "o",
            "key": "base/disk.bin",
            "regions": [{"bucket": bucket, "region": "eu-west-1"}],
        }
    )
    out = await S3ImagePublisher().publish(artifact, spec, make_ctx())
    assert out.artifact_uri is not None
    return out.artifact_uri


async def test_download_verifies_and_caches(s3lab, make_ctx, vhd_artifact, events, proxy_factory, tmp_path):
    uri = await publish_vhd(s3lab, make_ctx, vhd_artifact, windows=True)
    vhd = vhd_artifact.conversions["vhd"]
    digest = hashlib.sha256(vhd.read_bytes()).hexdigest()
    async with proxy_factory(s3lab.url) as proxy:
        source = S3ImageSource.model_validate(
            {"type": "S3Image", "uri": uri, "sha256Checksum": digest, "region": "eu-west-1", "endpointUrl": proxy.url}
        )
        ctx = make_ctx(part_size_mb=8)
        image = await S3ImageResolver().resolve(source, ctx)
        gets = [s for s in proxy.seen if s.method == "GET"]
        again = await S3ImageResolver().resolve(source, ctx)
        gets_again = [s for s in proxy.seen if s.method == "GET"][len(gets) :]

    assert image.path.read_bytes() == vhd.read_bytes()
    assert image.path.parent == ctx.cache_dir / "s3" and image.path.name == f"{digest}.vpc"
    assert (image.format, image.os_type, image.hyper_v_generation, image.sha256) == ("vpc", "Windows", "V2", digest)
    assert image.exact_version == f"sha256:{digest}"
    ranges = sorted(s.headers["range"] for s in gets)
    size = vhd.stat().st_size
    expected = [f"bytes=0-{8 * MiB - 1}", f"bytes={8 * MiB}-{16 * MiB - 1}", f"bytes={16 * MiB}-{size - 1}"]
    assert ranges == sorted(expected)
    assert all(s.headers.get("if-match") for s in gets)
    assert gets_again == [] and again.path == image.path
    last = [p for p in events.of_kind(Progress) if p.task == "download"][-1]
    assert (last.done, last.total) == (size, size)
    assert [p.name for p in (ctx.cache_dir / "s3").iterdir()] == [image.path.name]


async def test_wrong_checksum_is_refused_and_leaves_nothing(s3lab, make_ctx, raw_artifact):
    uri = await publish_vhd(s3lab, make_ctx, raw_artifact)  # raw artifact: .bin key, format from metadata
    ctx = make_ctx()
    source = S3ImageSource.model_validate({"type": "S3Image", "uri": uri, "sha256Checksum": "ab" * 32})
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        await S3ImageResolver().resolve(source, ctx)
    assert list((ctx.cache_dir / "s3").iterdir()) == []


async def test_checksum_from_metadata_when_not_given(s3lab, make_ctx, raw_artifact, events):
    """Without sha256Checksum the object's own sha256 metadata is the reference (with a warning)."""
    uri = await publish_vhd(s3lab, make_ctx, raw_artifact)
    source = S3ImageSource.model_validate({"type": "S3Image", "uri": uri, "format": "raw"})
    image = await S3ImageResolver().resolve(source, make_ctx())
    assert image.format == "raw" and image.os_type == "Linux"
    assert image.sha256 == hashlib.sha256(image.path.read_bytes()).hexdigest()
    assert any("no sha256Checksum given" in getattr(e, "message", "") for e in events.events)


async def test_missing_object_is_a_source_error(s3lab, make_ctx):
    bucket = await s3lab.bucket("eu-west-1")
    uri = f"s3://{bucket}/nope.vhd"
    source = S3ImageSource.model_validate({"type": "S3Image", "uri": uri, "sha256Checksum": "a" * 64})
    with pytest.raises(SourceError, match=r"nope\.vhd"):
        await S3ImageResolver().resolve(source, make_ctx())


def test_source_is_registered_and_routed():
    pm = PluginManager(entry_points=False, plugins=[hooks])
    spec = S3ImageSource.model_validate({"type": "S3Image", "uri": "s3://bucket/a.qcow2"})
    assert pm.source_for(spec, Config({}, {})) is S3ImageResolver
    with pytest.raises(ValueError, match="segments"):
        S3ImageSource.model_validate({"type": "S3Image", "uri": "s3://bucket/a/../b.qcow2"})
    with pytest.raises(ValueError, match="not an S3 URI"):
        S3ImageSource.model_validate({"type": "S3Image", "uri": "https://bucket/a.qcow2"})


async def test_a_source_disk_with_a_backing_file_is_refused(s3lab, make_ctx, tmp_path):
    """An object whose qcow2 header names a host file (its checksum matches: it covers only the header)."""
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"host secret\n" * 64)
    evil = tmp_path / "evil.qcow2"
    create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(evil), "1M"]
    await anyio.run_process(create)
    bucket = await s3lab.bucket("us-east-1")
    async with s3lab.client() as s3:
        await s3.put_object(Bucket=bucket, Key="evil.qcow2", Body=evil.read_bytes())
    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    spec = {"type": "S3Image", "uri": f"s3://{bucket}/evil.qcow2", "sha256Checksum": digest, "format": "qcow2"}
    with pytest.raises(SourceError, match=r"backing file .*id_rsa.*qemu-img convert"):
        await S3ImageResolver().resolve(S3ImageSource.model_validate(spec), make_ctx())
