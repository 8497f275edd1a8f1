"""The ``az://account/container/prefix`` artifact store (``[temporal] artifact_store``): blobs as block blobs.

The account is one of ``[azure.storage.<account>]`` (its ``blob_endpoint`` and Shared Key) or, unconfigured, the
public ``<account>.blob.core.windows.net`` with a token from azure-identity's default chain. An upload stages
blocks and commits them with one Put Block List (a single Put Blob when small), so readers never see part of a
blob; the blob records its sha256 in its metadata. Verification of what was downloaded is the core's
(:class:`aib_sdk.artifact_store.ArtifactStore`).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import urlparse

import anyio

from aib_provider_azure.session import AzureSession
from aib_provider_azure.settings import AzureSettings, BlobRef, _blob_ref
from aib_sdk.config import Config
from aib_sdk.errors import UsageError
from aib_sdk.runtime import bounded_map

BLOCK = 8 * 1024 * 1024
"""Block size of staged uploads and ranged downloads."""


class AzureBlobStore:
    """Blobs in one container under a name prefix."""

    def __init__(self, location: str, config: Config) -> None:
        parsed = urlparse(location)
        container, _, prefix = parsed.path.strip("/").partition("/")
        if parsed.query or parsed.fragment or not parsed.netloc or not container:
            raise UsageError(f"[temporal] artifact_store {location!r}: expected az://<account>/<container>[/<prefix>]")
        self.settings = AzureSettings.from_config(config)
        self.account = self.settings.account(parsed.netloc)
        self.container = container
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        try:
            self._where("sha256/" + "0" * 64)  # a bad container name or prefix is refused now, not at the first upload
        except UsageError as exc:
            raise UsageError(f"[temporal] artifact_store {location!r}: {exc}") from None
        self.location = f"az://{self.account.name}/{container}/{self.prefix}"

    def _where(self, key: str) -> BlobRef:
        rest = f"{self.container}/{self.prefix}{key}"
        return _blob_ref(self.account, f"az://{self.account.name}/{rest}", rest, None)

    async def has(self, key: str, sha256: str, size: int) -> bool:
        async with AzureSession(self.settings) as session:
            props = await session.blob.properties(self._where(key))
        if props is None:
            return False
        return int(props.get("content-length", -1)) == size and props.get("x-ms-meta-sha256") == sha256

    async def upload(self, key: str, path: Path, sha256: str, size: int) -> None:
        blob, metadata = self._where(key), {"sha256": sha256}
        async with AzureSession(self.settings) as session:
            if size <= BLOCK:
                await session.blob.put_block_blob(blob, await anyio.Path(path).read_bytes(), metadata)
                return
            run = os.urandom(6).hex()  # block ids of this upload only (a concurrent upload of the same key commits
            # its own list; the content is the same either way)
            ids = [base64.b64encode(f"{run}-{i:08d}".encode()).decode() for i in range(-(-size // BLOCK))]

            async def send(index: int) -> None:
                data = await anyio.to_thread.run_sync(_read_at, path, index * BLOCK, BLOCK)
                await session.blob.put_block(blob, ids[index], data)

            await bounded_map(send, list(range(len(ids))), self.settings.upload_concurrency)
            await session.blob.put_block_list(blob, ids, metadata)

    async def download(self, key: str, dest: Path) -> bool:
        blob = self._where(key)
        async with AzureSession(self.settings) as session:
            props = await session.blob.properties(blob)
            if props is None:
                return False
            size = int(props.get("content-length", 0))
            async with await anyio.open_file(dest, "wb") as out:
                for start in range(0, size, BLOCK):
                    await out.write(await session.blob.read(blob, start, min(BLOCK, size - start)))
        return True


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def open_azure_store(location: str, config: Config) -> AzureBlobStore:
    """The opener registered for ``az://`` (hook ``aib_register_artifact_stores``)."""
    return AzureBlobStore(location, config)
