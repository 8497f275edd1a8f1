"""A small Blob service REST client over httpx: page and block blobs, metadata, Copy Blob, ranged reads, deletes."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aib_provider_azure.credentials import TokenProvider
from aib_provider_azure.settings import STORAGE_SCOPE, STORAGE_VERSION, BlobRef, StorageAccount
from aib_sdk.errors import ConflictError, DistributeError
from aib_sdk.runtime import RetryPolicy

AZURE_POLICY = RetryPolicy(attempts=6, base=0.5, cap=60.0)
"""Azure's services ask for long ``Retry-After`` waits under throttling: more attempts and a higher cap."""

if TYPE_CHECKING:
    import httpx

_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.S)


def storage_error(what: str, response: httpx.Response) -> DistributeError:
    """A :class:`DistributeError` carrying the service's error code and message (never the request's auth)."""
    code = response.headers.get("x-ms-error-code", "")
    match = _MESSAGE.search(response.text) if response.content else None
    message = match.group(1).strip().splitlines()[0] if match else response.reason_phrase
    text = f"{what}: HTTP {response.status_code} {code}: {message}".rstrip(": ")
    return ConflictError(text) if response.status_code == 409 else DistributeError(text)


class BlobService:
    """Blob operations against any configured account; Shared Key when the account has a key, else a token."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        tokens: TokenProvider | None = None,
        *,
        policy: RetryPolicy = AZURE_POLICY,
    ) -> None:
        self.client = client
        self.tokens = tokens
        self.policy = policy
        self.calls: dict[str, int] = {}

    async def request(
        self,
        method: str,
        account: StorageAccount,
        url: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes = b"",
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> httpx.Response:
        """Send one signed request with retries; raise :func:`storage_error` unless the status is in ``ok``."""
        from aib_provider_azure.sharedkey import SharedKeyAuth  # an httpx.Auth: imported with the first request

        auth: httpx.Auth | None = SharedKeyAuth(account.name, account.key) if account.key else None
        self.calls[what] = self.calls.get(what, 0) + 1

        async def build() -> httpx.Request:
            hdrs = {"x-ms-version": STORAGE_VERSION, **(headers or {})}
            if auth is None and self.tokens is not None:
                hdrs["Authorization"] = "Bearer " + await self.tokens.token(STORAGE_SCOPE)
            request = self.client.build_request(method, url, params=params, headers=hdrs, content=content)
            if auth is not None:
                flow = auth.auth_flow(request)
                request = next(flow)
            return request

        from aib_sdk.runtime.http import send_with_retry  # the HTTP stack loads with the first request

        response = await send_with_retry(
            self.client, build, what=f"{what} {url}", policy=self.policy, error=DistributeError
        )
        if response.status_code not in ok:
            raise storage_error(f"{what} {url}", response)
        return response

    async def ensure_container(self, account: StorageAccount, container: str) -> None:
        url = f"{account.blob_endpoint}/{container}"
        await self.request("PUT", account, url, what="create container", params={"restype": "container"}, ok=(201, 409))

    async def create_page_blob(self, blob: BlobRef, size: int, metadata: Mapping[str, str]) -> None:
        """Put Blob (PageBlob of ``size`` bytes); refuses to overwrite an existing blob (409 → ConflictError)."""
        headers = {
            "x-ms-blob-type": "PageBlob",
            "x-ms-blob-content-length": str(size),
            "x-ms-blob-content-type": "application/octet-stream",
            "If-None-Match": "*",
            **_meta_headers(metadata),
        }
        try:
            await self.request("PUT", blob.account, blob.url, what="put blob", headers=headers, ok=(201,))
        except ConflictError as exc:
            raise ConflictError(f"{exc} (the blob already exists; choose another uri or delete it)") from exc

    async def put_page(self, blob: BlobRef, offset: int, data: bytes, *, md5: str | None = None) -> None:
        """Put Page: write ``data`` (a multiple of 512 bytes) at ``offset``, with its Content-MD5 (base64)."""
        headers = {
            "x-ms-page-write": "update",
            "x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
            "Content-MD5": md5 or base64.b64encode(hashlib.md5(data).digest()).decode(),
        }
        await self.request(
            "PUT",
            blob.account,
            blob.url,
            what="put page",
            params={"comp": "page"},
            headers=headers,
            content=data,
            ok=(201,),
        )

    async def put_block_blob(self, blob: BlobRef, data: bytes, metadata: Mapping[str, str]) -> None:
        """Put Blob (BlockBlob) with its whole content in one request, replacing any blob of that name."""
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "x-ms-blob-content-type": "application/octet-stream",
            "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            **_meta_headers(metadata),
        }
        await self.request("PUT", blob.account, blob.url, what="put blob", headers=headers, content=data, ok=(201,))

    async def put_block(self, blob: BlobRef, block_id: str, data: bytes) -> None:
        """Put Block: stage one uncommitted block (readers see nothing until :meth:`put_block_list`)."""
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}
        params = {"comp": "block", "blockid": block_id}
        await self.request(
            "PUT", blob.account, blob.url, what="put block", params=params, headers=headers, content=data, ok=(201,)
        )

    async def put_block_list(self, blob: BlobRef, block_ids: list[str], metadata: Mapping[str, str]) -> None:
        """Put Block List: commit the staged blocks, in order, as the blob's content (atomic)."""
        body = "".join(f"<Latest>{b}</Latest>" for b in block_ids)
        content = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{body}</BlockList>'.encode()
        headers = {"x-ms-blob-content-type": "application/octet-stream", **_meta_headers(metadata)}
        await self.request(
            "PUT",
            blob.account,
            blob.url,
            what="put block list",
            params={"comp": "blocklist"},
            headers=headers,
            content=content,
            ok=(201,),
        )

    async def set_metadata(self, blob: BlobRef, metadata: Mapping[str, str]) -> None:
        await self.request(
            "PUT",
            blob.account,
            blob.url,
            what="set metadata",
            params={"comp": "metadata"},
            headers=_meta_headers(metadata),
            ok=(200,),
        )

    async def properties(self, blob: BlobRef) -> httpx.Headers | None:
        """The blob's properties (response headers), or None when it does not exist."""
        response = await self.request("HEAD", blob.account, blob.url, what="get properties", ok=(200, 404))
        return None if response.status_code == 404 else response.headers

    async def delete(self, blob: BlobRef, *, if_match: str | None = None) -> None:
        """Delete the blob and its snapshots (only the version with ETag ``if_match`` when given: another one is
        left, 412); a blob that is already gone is fine."""
        headers = {"x-ms-delete-snapshots": "include"}
        if if_match is not None:
            headers["If-Match"] = if_match
        await self.request("DELETE", blob.account, blob.url, what="delete blob", headers=headers, ok=(202, 404, 412))

    async def start_copy(self, dest: BlobRef, source_url: str, metadata: Mapping[str, str]) -> httpx.Headers:
        """Copy Blob (server side) from ``source_url``; returns the response headers (x-ms-copy-status …)."""
        headers = {"x-ms-copy-source": source_url, "If-None-Match": "*", **_meta_headers(metadata)}
        response = await self.request("PUT", dest.account, dest.url, what="copy blob", headers=headers, ok=(202,))
        return response.headers

    async def read(self, blob: BlobRef, start: int, length: int) -> bytes:
        headers = {"x-ms-range": f"bytes={start}-{start + length - 1}"}
        response = await self.request("GET", blob.account, blob.url, what="get blob", headers=headers, ok=(200, 206))
        return response.content

    async def page_ranges(self, blob: BlobRef) -> list[tuple[int, int]]:
        """Get Page Ranges: the written ``(start, end_inclusive)`` ranges."""
        response = await self.request(
            "GET", blob.account, blob.url, what="get page ranges", params={"comp": "pagelist"}, ok=(200,)
        )
        pairs = re.findall(r"<PageRange><Start>(\d+)</Start><End>(\d+)</End></PageRange>", response.text)
        return [(int(a), int(b)) for a, b in pairs]


def _meta_headers(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {f"x-ms-meta-{k}": str(v) for k, v in metadata.items()}
