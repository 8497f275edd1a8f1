"""The ``s3://`` artifact store of the Temporal engine against moto's real S3 server: content-addressed uploads
(once per content, atomic, sha256 in the metadata), verified downloads, tampering caught on the reader."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from aib_provider_s3_vhd import artifact_store as s3_store
from aib_provider_s3_vhd import hooks
from aib_sdk.artifact_store import open_artifact_store
from aib_sdk.config import Config
from aib_sdk.errors import FetchError, UsageError
from aib_sdk.plugins.manager import PluginManager

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


def _store(location: str):
    config = Config({"s3-vhd": {"part_size_mb": 5, "retry_base_delay": 0.01, "max_attempts": 2}}, env={})
    return open_artifact_store(location, PluginManager(entry_points=False, plugins=[hooks]), config)


async def test_round_trip_multipart_and_tamper(s3lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_store, "SINGLE_PUT_MAX", 1 * MiB)  # the multipart path without a 64 MiB file
    bucket = await s3lab.bucket("us-east-1")
    store = _store(f"s3://{bucket}/aib/inputs")
    small, big = tmp_path / "setup.sh", tmp_path / "disk.raw"
    small.write_text("echo hi\n")
    big.write_bytes(os.urandom(12 * MiB + 123))

    digest, size = await store.put(small)
    assert (digest, size) == (hashlib.sha256(b"echo hi\n").hexdigest(), 8)
    big_digest, big_size = await store.put(big)
    assert big_size == 12 * MiB + 123
    keys = sorted(await s3lab.keys(bucket))
    assert keys == sorted([f"aib/inputs/sha256/{digest}", f"aib/inputs/sha256/{big_digest}"])
    head = await s3lab.head(bucket, f"aib/inputs/sha256/{big_digest}")
    assert head["Metadata"]["sha256"] == big_digest and "-" in head["ETag"]  # a multipart object
    assert await s3lab.uploads(bucket) == []  # nothing left open

    copy = await store.get(big_digest, tmp_path / "worker" / "disk.raw", what="input disk.raw")
    assert copy.read_bytes() == big.read_bytes()
    assert await store.put(small) == (digest, size)  # already stored: no second upload

    async with s3lab.client() as s3:  # tampered with in the bucket (metadata kept)
        await s3.put_object(Bucket=bucket, Key=f"aib/inputs/sha256/{digest}", Body=b"echo evil\n")
    with pytest.raises(FetchError, match="does not match its digest"):
        await store.get(digest, tmp_path / "worker" / "setup.sh", what="input setup.sh")
    assert not (tmp_path / "worker" / "setup.sh").exists()
    assert [p.name for p in (tmp_path / "worker").iterdir()] == ["disk.raw"]  # no temporary file left
    with pytest.raises(FetchError, match="missing from the artifact store"):
        await store.get("0" * 64, tmp_path / "worker" / "x", what="input x")


async def test_bad_locations_and_a_missing_bucket(s3lab, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="invalid S3 bucket name"):
        _store("s3://No_Such/x")
    (tmp_path / "a").write_text("a")
    store = _store("s3://aib-no-such-bucket-4711")
    with pytest.raises(UsageError, match="NoSuchBucket"):
        await store.put(tmp_path / "a")
    with pytest.raises(UsageError, match="no plugin stores gs://"):
        open_artifact_store("gs://bucket", PluginManager(entry_points=False, plugins=[hooks]), Config({}, env={}))
