"""The ``s3://bucket/prefix`` artifact store (``[temporal] artifact_store``): blobs as objects under the prefix.

Credentials and the endpoint come from botocore's chain (``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3`` …, see
:class:`~aib_provider_s3_vhd.transport.ClientPool`). An upload is one PutObject (small files) or a multipart
upload that is completed only when every part is in, so a reader never sees half an object; the object records
its sha256 in its metadata. Downloads are ranged and pinned to the object's ETag. Verification of what was
downloaded is the core's (:class:`aib_sdk.artifact_store.ArtifactStore`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio

from aib_provider_s3_vhd.download import download_object
from aib_provider_s3_vhd.locations import S3Location, check_bucket, check_key
from aib_provider_s3_vhd.multipart import upload_file
from aib_provider_s3_vhd.parts import MiB, part_size_for, plan_parts
from aib_provider_s3_vhd.settings import S3Settings
from aib_provider_s3_vhd.transport import ClientPool, Endpoint, describe, error_code, http_status, with_retries
from aib_sdk.config import Config
from aib_sdk.errors import FetchError, UsageError

SINGLE_PUT_MAX = 64 * MiB
"""Files up to this size go up in one PutObject; larger ones as a multipart upload."""


class S3BlobStore:
    """Blobs in one bucket under a key prefix."""

    def __init__(self, location: str, config: Config) -> None:
        parsed = urlparse(location)
        try:
            self.bucket = check_bucket(parsed.netloc)
            prefix = parsed.path.strip("/")
            if prefix:
                check_key(prefix)
        except ValueError as exc:
            raise UsageError(f"[temporal] artifact_store {location!r}: {exc}") from None
        if parsed.query or parsed.fragment:
            raise UsageError(f"[temporal] artifact_store {location!r}: no query or fragment")
        self.prefix = f"{prefix}/" if prefix else ""
        self.location = f"s3://{self.bucket}/{self.prefix}"
        self.settings = S3Settings.from_config(config)

    def _where(self, key: str) -> S3Location:
        return S3Location(self.bucket, self.prefix + key)

    async def _call(self, what: str, key: str, call: Any) -> Any:
        """Open a client, run ``call(client)`` under the provider's retry; S3 errors become :class:`FetchError`."""
        async with ClientPool(self.settings) as pool:
            client = await pool.client(Endpoint(None))
            try:
                return await call(client)
            except Exception as exc:
                if error_code(exc) or http_status(exc):
                    raise FetchError(f"{what} {self._where(key).uri}: {describe(exc)}") from None
                raise

    async def _head(self, client: Any, key: str) -> dict[str, Any] | None:
        where = self._where(key)
        try:
            head: dict[str, Any] = await with_retries(
                lambda: client.head_object(Bucket=where.bucket, Key=where.key), self.settings
            )
        except Exception as exc:
            if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head

    async def has(self, key: str, sha256: str, size: int) -> bool:
        async def check(client: Any) -> bool:
            head = await self._head(client, key)
            meta = (head or {}).get("Metadata") or {}
            return head is not None and int(head["ContentLength"]) == size and meta.get("sha256") == sha256

        result: bool = await self._call("look up", key, check)
        return result

    async def upload(self, key: str, path: Path, sha256: str, size: int) -> None:
        where = self._where(key)
        args = {"Metadata": {"sha256": sha256}, "ContentType": "application/octet-stream"}

        async def send(client: Any) -> None:
            if size <= SINGLE_PUT_MAX:
                data = await anyio.Path(path).read_bytes()
                await with_retries(
                    lambda: client.put_object(Bucket=where.bucket, Key=where.key, Body=data, **args), self.settings
                )
                return
            parts = plan_parts(size, part_size_for(size, self.settings.part_size))
            await upload_file(client, path, where, parts, args, self.settings, on_bytes=lambda _n: None)

        await self._call("upload to", key, send)

    async def download(self, key: str, dest: Path) -> bool:
        async def fetch(client: Any) -> bool:
            head = await self._head(client, key)
            if head is None:
                return False
            size = int(head["ContentLength"])
            if size == 0:
                await anyio.Path(dest).write_bytes(b"")
                return True
            await download_object(
                client, self._where(key), str(head["ETag"]), size, dest, self.settings, on_bytes=lambda _n: None
            )
            return True

        found: bool = await self._call("download", key, fetch)
        return found


def open_s3_store(location: str, config: Config) -> S3BlobStore:
    """The opener registered for ``s3://`` (hook ``aib_register_artifact_stores``)."""
    return S3BlobStore(location, config)
