"""``s3://bucket/key`` locations: parsing and the checks that keep keys and bucket names sane."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from aib_sdk.config import Config
from aib_sdk.trust import allowed_endpoints, is_public_s3_host
from aib_sdk.trust import check_endpoint as check_trusted_endpoint

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")
_MAX_KEY_BYTES = 1024


def check_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a valid S3 bucket name; raise ``ValueError`` otherwise."""
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"invalid S3 bucket name {bucket!r} (3-63 characters: a-z, 0-9, '.', '-')")
    return bucket


def check_region(region: str) -> str:
    """Return ``region`` if it looks like a region name (``eu-west-1``); raise ``ValueError`` otherwise."""
    if not _REGION.match(region):
        raise ValueError(f"invalid region name {region!r} (lower-case letters, digits and '-')")
    return region


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object key: not empty, relative, no ``.``/``..`` segments, no backslash."""
    if not key or key.startswith("/"):
        raise ValueError(f"invalid S3 key {key!r}: must be non-empty and must not start with '/'")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise ValueError(f"invalid S3 key: longer than {_MAX_KEY_BYTES} bytes")
    segments = key.split("/")
    if any(seg in (".", "..") for seg in segments) or "\\" in key or any(ord(ch) < 32 for ch in key):
        raise ValueError(f"invalid S3 key {key!r}: no '.' or '..' segments, backslashes or control characters")
    if key.endswith("/"):
        raise ValueError(f"invalid S3 key {key!r}: names a folder, not an object")
    return key


def check_endpoint(url: str) -> str:
    """Return ``url`` if it is an ``http(s)://host[:port][/path]`` endpoint without credentials."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"invalid endpoint URL {url!r}: expected http(s)://host[:port]")
    if parsed.username or parsed.password:
        raise ValueError("endpoint URL must not carry credentials")
    if parsed.query or parsed.fragment:
        raise ValueError(f"invalid endpoint URL {url!r}: no query or fragment")
    return url


def check_template_endpoint(url: str | None, config: Config, what: str) -> None:
    """A template's ``endpointUrl`` gets the operator's AWS credentials only if it is AWS's own S3 endpoint or the
    operator configured it (``AWS_ENDPOINT_URL(_S3)``, ``[trust] endpoints``); else :class:`UsageError` at plan time."""
    if not url:
        return
    env = config.env
    configured = [env.get("AWS_ENDPOINT_URL", ""), env.get("AWS_ENDPOINT_URL_S3", ""), *allowed_endpoints(config)]
    check_trusted_endpoint(
        url, configured=configured, public=is_public_s3_host, what=what, setting="AWS_ENDPOINT_URL_S3"
    )


@dataclass(frozen=True)
class S3Location:
    """One object: bucket and key."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def __str__(self) -> str:
        return self.uri


def is_s3_uri(uri: str | None) -> bool:
    return bool(uri) and urlparse(uri).scheme.lower() == "s3"


def parse_s3_uri(uri: str) -> S3Location:
    """Parse ``s3://bucket/key``; raise ``ValueError`` naming what is wrong."""
    parsed = urlparse(uri)
    if parsed.scheme.lower() != "s3":
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    if parsed.query or parsed.fragment or parsed.params:
        raise ValueError(f"S3 URI must not carry a query or fragment: {uri!r}")
    bucket = check_bucket(parsed.netloc)
    key = check_key(unquote(parsed.path[1:] if parsed.path.startswith("/") else parsed.path))
    return S3Location(bucket, key)
