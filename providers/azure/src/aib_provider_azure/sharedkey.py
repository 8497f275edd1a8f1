"""Azure Storage request signing: Shared Key (an ``httpx.Auth``) and service SAS tokens for Copy Blob sources."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from urllib.parse import parse_qsl, quote, urlparse

import httpx

from aib_provider_azure.settings import STORAGE_VERSION

__all__ = ["STORAGE_VERSION", "SharedKeyAuth", "blob_sas", "string_to_sign"]

_SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)


def _sign(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode()


def string_to_sign(request: httpx.Request, account: str) -> str:
    """The Shared Key string-to-sign of ``request`` (Blob service, version 2015-02-21 and later)."""
    headers = request.headers
    lines = [request.method.upper()]
    for name in _SIGNED_HEADERS:
        value = headers.get(name, "")
        if name == "content-length" and value == "0":
            value = ""
        lines.append(value)
    ms = sorted((k.lower(), " ".join(v.split())) for k, v in headers.items() if k.lower().startswith("x-ms-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in ms)
    url = urlparse(str(request.url))
    resource = f"/{account}{url.path or '/'}"
    params: dict[str, list[str]] = {}
    for k, v in parse_qsl(url.query, keep_blank_values=True):
        params.setdefault(k.lower(), []).append(v)
    for k in sorted(params):
        resource += f"\n{k}:{','.join(sorted(params[k]))}"
    return "\n".join(lines) + "\n" + canonical_headers + resource


class SharedKeyAuth(httpx.Auth):
    """Signs each request (and each retry, with a fresh ``x-ms-date``) with the account's Shared Key."""

    def __init__(self, account: str, key: bytes) -> None:
        self._account = account
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["x-ms-date"] = formatdate(usegmt=True)
        request.headers.setdefault("x-ms-version", STORAGE_VERSION)
        signature = _sign(self._key, string_to_sign(request, self._account))
        request.headers["Authorization"] = f"SharedKey {self._account}:{signature}"
        yield request

    def __repr__(self) -> str:
        return f"SharedKeyAuth({self._account!r})"


def blob_sas(
    account: str,
    key: bytes,
    container: str,
    blob: str,
    *,
    permissions: str = "r",
    lifetime: timedelta = timedelta(hours=4),
    version: str = STORAGE_VERSION,
) -> str:
    """A service SAS query string (no leading ``?``) granting ``permissions`` on one blob, valid for ``lifetime``."""
    now = datetime.now(UTC)
    start = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expiry = (now + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ")
    canonical = f"/blob/{account}/{container}/{blob}"
    # sp, st, se, resource, si, sip, spr, sv, sr, snapshot, ses, rscc, rscd, rsce, rscl, rsct (2020-12-06+)
    fields = [permissions, start, expiry, canonical, "", "", "https,http", version, "b", "", "", "", "", "", "", ""]
    signature = _sign(key, "\n".join(fields))
    query = {
        "sv": version,
        "st": start,
        "se": expiry,
        "sr": "b",
        "sp": permissions,
        "spr": "https,http",
        "sig": signature,
    }
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
