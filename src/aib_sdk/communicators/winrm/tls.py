"""TLS for WinRM over HTTPS: a CA bundle, the system store, or a pinned certificate sha256 thumbprint.

Verification is never silently off. A pinned thumbprint replaces chain and name checks by an exact match of the
server certificate's sha256, checked right after the TLS handshake and before any HTTP byte (credentials
included) is sent.
"""

from __future__ import annotations

import functools
import hashlib
import ssl
from pathlib import Path
from typing import Any

import httpcore
import httpx

from aib_sdk.communicators.winrm.session import CertificatePinError
from aib_sdk.errors import CommunicatorError

__all__ = ["CertificatePinError", "normalize_thumbprint", "ssl_context", "transport"]


def normalize_thumbprint(value: str) -> str:
    digest = value.replace(":", "").replace(" ", "").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise CommunicatorError("cert_thumbprint must be a sha256 digest (64 hexadecimal digits)")
    return digest


class _PinnedStream(httpcore.AsyncNetworkStream):
    """Delegates to a real stream; after ``start_tls`` compares the peer certificate with the pin."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, thumbprint: str) -> None:
        self._inner, self._thumbprint = inner, thumbprint

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        ssl_object = tls.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        actual = hashlib.sha256(der).hexdigest() if der else "none"
        if actual != self._thumbprint:
            await tls.aclose()
            raise CertificatePinError(
                f"WinRM server certificate sha256 {actual} does not match the pinned thumbprint {self._thumbprint}"
            )
        return _PinnedStream(tls, self._thumbprint)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, thumbprint: str) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._thumbprint = thumbprint

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinnedStream(stream, self._thumbprint)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise CommunicatorError("WinRM does not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _system_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def ssl_context(ca_bundle: Path | None, thumbprint: str | None) -> ssl.SSLContext:
    """The context for HTTPS: pinned (no chain check, thumbprint checked instead), a CA bundle, or system CAs."""
    if thumbprint:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # replaced by the exact thumbprint check in _PinnedStream
        return ctx
    if ca_bundle is not None:
        return ssl.create_default_context(cafile=str(ca_bundle))
    return _system_context()  # loading the system store is slow and blocking: once per process


def transport(*, scheme: str, ca_bundle: Path | None, thumbprint: str | None) -> httpx.AsyncBaseTransport:
    """An httpx transport holding one keep-alive connection (NTLM authenticates the connection)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=60.0)
    if scheme != "https":
        # Plain HTTP never uses it, but httpx builds a context per transport; share one instead of reloading CAs.
        return httpx.AsyncHTTPTransport(limits=limits, verify=_system_context())
    ctx = ssl_context(ca_bundle, thumbprint)
    tr = httpx.AsyncHTTPTransport(verify=ctx, limits=limits)
    if thumbprint:
        # httpx takes no network backend; swap its pool for one whose streams check the pin after the handshake.
        tr._pool = httpcore.AsyncConnectionPool(
            ssl_context=ctx,
            max_connections=1,
            max_keepalive_connections=1,
            keepalive_expiry=60.0,
            network_backend=_PinnedBackend(normalize_thumbprint(thumbprint)),
        )
    return tr
