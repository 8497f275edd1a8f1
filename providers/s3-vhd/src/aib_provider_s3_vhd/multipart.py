"""One object written as a multipart upload: parts from a file (upload) or from another object (server-side copy).

Either way the upload is completed only when every part is in; on any failure or cancellation it is aborted
(shielded, bounded), so no multipart upload is left behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from aib_provider_s3_vhd.locations import S3Location
from aib_provider_s3_vhd.parts import Part, close_fd, open_fd, read_part
from aib_provider_s3_vhd.settings import S3Settings
from aib_provider_s3_vhd.transport import ClientPool, Endpoint, error_code, unwrap, with_retries
from aib_sdk.config import Config
from aib_sdk.errors import DistributeError
from aib_sdk.journal import Journal
from aib_sdk.options import BuildOptions
from aib_sdk.runtime import cleanup_scope

RetryHook = Callable[[int, BaseException, float], None]
ABORT_DEADLINE = 60.0

SendPart = Callable[[str, Part], Awaitable[dict[str, Any]]]


async def abort_upload(client: Any, dest: S3Location, upload_id: str, settings: S3Settings) -> bool:
    """AbortMultipartUpload, shielded from cancellation and bounded in time; errors are swallowed (False).

    ``NoSuchUpload`` means it is already gone (completed or aborted), which is what we want.
    """
    # best effort: the caller reports the original error
    with cleanup_scope(ABORT_DEADLINE), contextlib.suppress(Exception):
        try:
            await with_retries(
                lambda: client.abort_multipart_upload(Bucket=dest.bucket, Key=dest.key, UploadId=upload_id),
                settings,
            )
        except Exception as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
        return True
    return False


def upload_record(client: Any, dest: S3Location) -> dict[str, Any]:
    """What the journal keeps of a multipart upload about to start (the upload id is added once known)."""
    return {
        "bucket": dest.bucket,
        "key": dest.key,
        "endpointUrl": str(client.meta.endpoint_url),
        "region": client.meta.region_name,
        "since": datetime.now(UTC).isoformat(),
    }


async def _multipart(
    client: Any,
    dest: S3Location,
    parts: list[Part],
    create_args: dict[str, Any],
    send: SendPart,
    settings: S3Settings,
    journal: Journal,
) -> dict[str, Any]:
    entry = await journal.acquire("s3.multipart", upload_record(client, dest), f"multipart upload to {dest.uri}")
    try:
        created = await with_retries(
            lambda: client.create_multipart_upload(Bucket=dest.bucket, Key=dest.key, **create_args), settings
        )
    except BaseException:
        await journal.release(entry)  # refused: nothing to abort
        raise
    upload_id: str = created["UploadId"]
    await journal.update(entry, {"uploadId": upload_id})
    try:
        done: list[dict[str, Any]] = [{} for _ in parts]
        queue = iter(parts)

        async def worker() -> None:
            for part in queue:  # one shared iterator: each part is taken by exactly one worker
                done[part.number - 1] = await send(upload_id, part)

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(settings.max_concurrency, len(parts))):
                    tg.start_soon(worker)
        except ExceptionGroup as group:  # a part failed for good: report that error, not the group
            raise unwrap(group) from group
        result: dict[str, Any] = await with_retries(
            lambda: client.complete_multipart_upload(
                Bucket=dest.bucket, Key=dest.key, UploadId=upload_id, MultipartUpload={"Parts": done}
            ),
            settings,
        )
    except BaseException:
        if await abort_upload(client, dest, upload_id, settings):
            await journal.release(entry)
        raise
    await journal.release(entry)  # completed: the object is the run's output
    return result


async def upload_file(
    client: Any,
    path: Path,
    dest: S3Location,
    parts: list[Part],
    create_args: dict[str, Any],
    settings: S3Settings,
    *,
    on_bytes: Callable[[int], None],
    on_retry: RetryHook | None = None,
    journal: Journal | None = None,
) -> dict[str, Any]:
    """Upload ``path`` as ``dest``: parts read in worker threads, each with its SHA-256 checksum."""
    fd = await open_fd(path, os.O_RDONLY)
    try:

        async def send(upload_id: str, part: Part) -> dict[str, Any]:
            data, checksum = await read_part(fd, part)
            response = await with_retries(
                lambda: client.upload_part(
                    Bucket=dest.bucket,
                    Key=dest.key,
                    UploadId=upload_id,
                    PartNumber=part.number,
                    Body=data,
                    ContentLength=part.size,
                    ChecksumSHA256=checksum,
                ),
                settings,
                on_retry=on_retry,
            )
            on_bytes(part.size)
            return {"PartNumber": part.number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

        args = {**create_args, "ChecksumAlgorithm": "SHA256"}
        return await _multipart(client, dest, parts, args, send, settings, journal or Journal.disabled())
    finally:
        with anyio.CancelScope(shield=True):
            await close_fd(fd)


async def copy_whole(
    client: Any,
    source: S3Location,
    source_etag: str,
    dest: S3Location,
    create_args: dict[str, Any],
    settings: S3Settings,
    *,
    on_retry: RetryHook | None = None,
) -> dict[str, Any]:
    """Fill ``dest`` from ``source`` with one CopyObject (objects up to 5 GiB): atomic, nothing to abort."""
    response: dict[str, Any] = await with_retries(
        lambda: client.copy_object(
            Bucket=dest.bucket,
            Key=dest.key,
            CopySource={"Bucket": source.bucket, "Key": source.key},
            CopySourceIfMatch=source_etag,
            MetadataDirective="REPLACE",
            TaggingDirective="REPLACE",
            ChecksumAlgorithm="SHA256",
            **create_args,
        ),
        settings,
        on_retry=on_retry,
    )
    return response


async def copy_object(
    client: Any,
    source: S3Location,
    source_etag: str,
    dest: S3Location,
    parts: list[Part],
    create_args: dict[str, Any],
    settings: S3Settings,
    *,
    on_bytes: Callable[[int], None],
    on_retry: RetryHook | None = None,
    journal: Journal | None = None,
) -> dict[str, Any]:
    """Fill ``dest`` from ``source`` server-side, UploadPartCopy of each range (pinned to ``source_etag``).

    Keeps the source's part layout, so the copy's multipart ETag equals the source's. For objects above 5 GiB.
    """

    async def send(upload_id: str, part: Part) -> dict[str, Any]:
        response = await with_retries(
            lambda: client.upload_part_copy(
                Bucket=dest.bucket,
                Key=dest.key,
                UploadId=upload_id,
                PartNumber=part.number,
                CopySource={"Bucket": source.bucket, "Key": source.key},
                CopySourceRange=part.byte_range,
                CopySourceIfMatch=source_etag,
            ),
            settings,
            on_retry=on_retry,
        )
        on_bytes(part.size)
        result = response["CopyPartResult"]
        entry = {"PartNumber": part.number, "ETag": result["ETag"]}
        if result.get("ChecksumSHA256"):
            entry["ChecksumSHA256"] = result["ChecksumSHA256"]
        return entry

    args = {**create_args, "ChecksumAlgorithm": "SHA256"}
    return await _multipart(client, dest, parts, args, send, settings, journal or Journal.disabled())


async def release_upload(data: dict[str, Any], config: Config, options: BuildOptions) -> str:
    """Releaser of ``s3.multipart`` (aib gc): abort the upload; without its id (the builder died while creating
    it), abort the uploads of that key begun within two minutes of the journal entry."""
    settings = S3Settings.from_config(config)
    dest = S3Location(str(data["bucket"]), str(data["key"]))
    async with ClientPool(settings) as pool:
        client = await pool.client(Endpoint(data.get("region"), data.get("endpointUrl")))
        upload_ids = [str(data["uploadId"])] if data.get("uploadId") else []
        if not upload_ids:
            since = datetime.fromisoformat(str(data["since"]))
            listed = await client.list_multipart_uploads(Bucket=dest.bucket, Prefix=dest.key)
            for upload in listed.get("Uploads", []):
                started = upload["Initiated"]
                if upload["Key"] == dest.key and abs((started - since).total_seconds()) < 120:
                    upload_ids.append(upload["UploadId"])
        for upload_id in upload_ids:
            if not await abort_upload(client, dest, upload_id, settings):
                raise DistributeError(f"could not abort multipart upload {upload_id} of {dest.uri}")
    if not upload_ids:
        return f"no multipart upload of {dest.uri} was open"
    return f"aborted multipart upload(s) {', '.join(upload_ids)} of {dest.uri}"
