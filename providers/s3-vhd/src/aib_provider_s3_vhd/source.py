"""The ``S3Image`` source: a base image in S3, downloaded once, verified by sha256 and cached by digest."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
from pydantic import BaseModel

from aib_provider_s3_vhd.download import download_object
from aib_provider_s3_vhd.locations import S3Location, check_template_endpoint, parse_s3_uri
from aib_provider_s3_vhd.settings import S3Settings
from aib_provider_s3_vhd.specs import S3ImageSource
from aib_provider_s3_vhd.transport import ClientPool, Endpoint, describe, with_retries
from aib_sdk.artifacts import DiskFormat, DiskImage
from aib_sdk.config import Config
from aib_sdk.context import RunContext
from aib_sdk.disks import check_self_contained, sha256_file
from aib_sdk.errors import ChecksumError, SourceError

_FORMATS: dict[str, DiskFormat] = {
    "vhd": "vpc",
    "vhd-dynamic": "vpc",
    "vpc": "vpc",
    "raw": "raw",
    "img": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
}


def _format_of(spec: S3ImageSource, key: str, metadata: dict[str, str]) -> DiskFormat:
    for candidate in (spec.format, metadata.get("aib-format"), key.rsplit(".", 1)[-1].lower() if "." in key else None):
        if candidate and candidate.lower() in _FORMATS:
            return _FORMATS[candidate.lower()]
    raise SourceError(f'{spec.uri}: cannot tell the disk format; set "format" (vhd, raw, qcow2, vmdk)')


class S3ImageResolver:
    """Resolves ``{"type": "S3Image", "uri": "s3://…", "sha256Checksum": …}`` into a cached local disk."""

    type_name: ClassVar[str] = "S3Image"
    spec_model: ClassVar[type[BaseModel]] = S3ImageSource

    @classmethod
    def claims(cls, spec: BaseModel, config: Config) -> bool:
        """Claims every ``S3Image`` source; refuses (:class:`UsageError`) an ``endpointUrl`` the operator did not
        configure, so no credentials go to a host the template chose."""
        if not isinstance(spec, S3ImageSource):
            return False
        check_template_endpoint(spec.endpoint_url, config, f"S3Image source {spec.uri}")
        return True

    async def resolve(self, spec: BaseModel, ctx: RunContext) -> DiskImage:
        assert isinstance(spec, S3ImageSource)
        settings = S3Settings.from_config(ctx.config)
        location = parse_s3_uri(spec.uri)
        async with ClientPool(settings) as pool:
            client = await pool.client(Endpoint(spec.region, spec.endpoint_url))
            try:
                head = await with_retries(
                    lambda: client.head_object(Bucket=location.bucket, Key=location.key), settings
                )
            except Exception as exc:
                raise SourceError(f"source {spec.uri}: {describe(exc)}") from exc
            metadata: dict[str, str] = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
            expected = spec.sha256_checksum.lower() or metadata.get("sha256", "").lower()
            if not expected:
                raise SourceError(f"source {spec.uri}: set sha256Checksum (the object carries no sha256 metadata)")
            if not spec.sha256_checksum:
                ctx.warn(f"source {spec.uri}: no sha256Checksum given; verifying against the object's metadata")
            fmt = _format_of(spec, location.key, metadata)
            size = int(head["ContentLength"])
            cache = ctx.cache_dir / "s3"
            await anyio.Path(cache).mkdir(parents=True, exist_ok=True)
            final = cache / f"{expected}.{fmt}"
            cached = anyio.Path(final)
            if await cached.exists() and (await cached.stat()).st_size == size:
                ctx.log("s3:source", f"{spec.uri}: using cached {final}")
            else:
                await self._download(client, spec, location, str(head["ETag"]), size, expected, final, settings, ctx)
        os_type: Literal["Linux", "Windows"] = spec.os_type or (
            "Windows" if metadata.get("aib-os-type") == "Windows" else "Linux"
        )
        generation: Literal["V1", "V2"] = spec.hyper_v_generation or (
            "V2" if metadata.get("aib-hyper-v-generation") == "V2" else "V1"
        )
        await check_self_contained(final, fmt, what=f"S3Image source {spec.uri}")
        return DiskImage(
            path=final,
            format=fmt,
            os_type=os_type,
            hyper_v_generation=generation,
            sha256=expected,
            exact_version=_version(head) or f"sha256:{expected}",
            attributes={"s3_uri": spec.uri, "etag": str(head.get("ETag", ""))},
        )

    async def _download(
        self,
        client: Any,
        spec: S3ImageSource,
        location: S3Location,
        etag: str,
        size: int,
        expected: str,
        final: Path,
        settings: S3Settings,
        ctx: RunContext,
    ) -> None:
        """Download into a temporary file beside ``final``, verify, then rename into place (atomic)."""
        temp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            ctx.progress("download", spec.uri, done, size)

        def retrying(attempt: int, exc: BaseException, delay: float) -> None:
            ctx.log("s3:source", f"{spec.uri}: retrying after {describe(exc)} (attempt {attempt})")

        try:
            await download_object(client, location, etag, size, temp, settings, on_bytes=advance, on_retry=retrying)
            actual = await sha256_file(temp, lambda d, t: ctx.progress("checksum", spec.uri, d, t))
            if actual != expected:
                raise ChecksumError(spec.uri, expected, actual)
            await anyio.Path(temp).rename(final)
        except ChecksumError:
            raise
        except Exception as exc:
            raise SourceError(f"source {spec.uri}: download failed: {describe(exc)}") from exc
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.Path(temp).unlink(missing_ok=True)


def _version(head: dict[str, Any]) -> str:
    version = str(head.get("VersionId") or "")
    return "" if version == "null" else version
