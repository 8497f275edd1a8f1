"""The S3Image distributor passes the provider conformance suite, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from aib_provider_s3_vhd.distributors import S3ImagePublisher
from aib_sdk.context import RunContext
from aib_sdk.testing.conformance import DistributorConformance


class TestS3Image(DistributorConformance):
    distributor = S3ImagePublisher

    @pytest.fixture(autouse=True)
    def _moto(self, aws_env: str, make_ctx: Callable[..., RunContext]) -> Iterator[None]:
        self.make_ctx = make_ctx
        self.s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=aws_env)
        self.bucket = f"aib-conformance-{uuid.uuid4().hex[:10]}"
        self.s3.create_bucket(Bucket=self.bucket)
        yield
        for upload in self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for item in self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", []):
            self.s3.delete_object(Bucket=self.bucket, Key=item["Key"])
        self.s3.delete_bucket(Bucket=self.bucket)
        self.s3.close()

    def context(self, tmp_path: Path) -> RunContext:
        return self.make_ctx()

    def target(self, where: Path) -> dict[str, Any]:
        regions = [{"bucket": self.bucket, "region": "us-east-1"}]
        return {"type": "S3Image", "regions": regions, "key": f"{where.name}/image.vhd", "runOutputName": "s3"}

    def published(self, where: Path) -> list[str]:
        prefix = f"{where.name}/"
        objects = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        uploads = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix).get("Uploads", [])
        return sorted([o["Key"] for o in objects] + [f"incomplete upload of {u['Key']}" for u in uploads])
