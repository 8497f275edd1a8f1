"""``s3://bucket/key`` locations: parsing and the checks that keep keys and bucket names sane."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

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
