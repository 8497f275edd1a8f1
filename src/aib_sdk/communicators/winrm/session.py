"""One authenticated WS-Management connection: NTLM (sealed over HTTP) or Basic/NTLM over HTTPS.

NTLM authenticates a TCP connection, so a session owns an httpx client limited to one keep-alive connection and
sends one request at a time. When the server answers 401 to a request on an established session (the connection
was replaced), the session authenticates again and resends once. Credentials are never logged or put in errors.
httpx is imported when the first client is made, so the communicator class registers without it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

from aib_sdk.communicators.winrm import encryption
from aib_sdk.errors import CommunicatorError

if TYPE_CHECKING:
    import httpx

AuthKind = Literal["ntlm", "basic"]


class AuthenticationError(CommunicatorError):
    """The WinRM service refused the credentials."""


class ConnectionLost(CommunicatorError):
    """The connection broke (refused, reset, or timed out) — for example because the guest rebooted."""


class CertificatePinError(CommunicatorError):
    """The server's certificate does not match the pinned thumbprint."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the WinRM service."""

    host: str
    port: int
    scheme: Literal["http", "https"]
    username: str
    password: str = field(repr=False)
    auth: AuthKind = "ntlm"
    path: str = "/wsman"
    ca_bundle: Path | None = None
    cert_thumbprint: str | None = None
    connect_timeout: float = 15.0

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"

    @property
    def encrypted(self) -> bool:
        """Whether messages are sealed with NTLM (plain HTTP); HTTPS relies on TLS."""
        return self.scheme == "http"

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, user={self.username!r}, auth={self.auth!r})"


class Session:
    """One authenticated connection to ``endpoint``; :meth:`post` sends a SOAP message and returns the reply."""

    def __init__(self, endpoint: Endpoint, read_timeout: float) -> None:
        if endpoint.auth == "basic" and endpoint.scheme != "https":
            raise CommunicatorError("Basic authentication is refused over plain HTTP; use HTTPS or NTLM")
        self.endpoint = endpoint
        self._read_timeout = read_timeout
        self._client: httpx.AsyncClient | None = None
        self._ctx: Any = None
        self._lock = anyio.Lock()

    def _new_client(self) -> httpx.AsyncClient:
        import httpx

        from aib_sdk.communicators.winrm.tls import transport

        ep = self.endpoint
        return httpx.AsyncClient(
            transport=transport(scheme=ep.scheme, ca_bundle=ep.ca_bundle, thumbprint=ep.cert_thumbprint),
            timeout=httpx.Timeout(self._read_timeout, connect=ep.connect_timeout),
            headers={"User-Agent": "aib-sdk WinRM"},
        )

    async def aclose(self) -> None:
        client, self._client, self._ctx = self._client, None, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def _send(self, content: bytes, headers: dict[str, str]) -> httpx.Response:
        import httpx

        if self._client is None:
            self._client = self._new_client()
        try:
            return await self._client.post(self.endpoint.url, content=content, headers=headers)
        except CommunicatorError:
            raise
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            await self.aclose()
            raise ConnectionLost(f"WinRM connection to {self.endpoint.url} failed: {type(exc).__name__}") from exc

    async def _authenticate(self) -> None:
        """Run the NTLM handshake on an empty POST (as WinRM clients do before sealed traffic)."""
        import spnego
        import spnego.exceptions

        ep = self.endpoint
        await self.aclose()
        ctx = spnego.client(ep.username, ep.password, hostname=ep.host, service="HTTP", protocol="ntlm")
        try:
            token = ctx.step() or b""
            resp = await self._send(b"", {"Authorization": "Negotiate " + base64.b64encode(token).decode()})
            challenge = _negotiate_token(resp)
            if resp.status_code != 401 or challenge is None:
                raise AuthenticationError(f"WinRM NTLM handshake: unexpected HTTP {resp.status_code} to negotiate")
            token = ctx.step(challenge) or b""
            resp = await self._send(b"", {"Authorization": "Negotiate " + base64.b64encode(token).decode()})
        except spnego.exceptions.SpnegoError as exc:
            raise AuthenticationError(f"WinRM NTLM handshake failed: {exc.message}") from exc
        if resp.status_code == 401:
            await self.aclose()
            raise AuthenticationError(f"WinRM refused the credentials of user {ep.username!r} (HTTP 401)")
        if resp.status_code >= 400:
            raise AuthenticationError(f"WinRM NTLM handshake: unexpected HTTP {resp.status_code}")
        self._ctx = ctx

    async def post(self, message: bytes) -> bytes:
        """Send one SOAP message; return the (decrypted) reply body, faults included, for the caller to parse."""
        async with self._lock:
            for attempt in (1, 2):
                resp = await self._post_once(message)
                if resp is not None:
                    return resp
                if attempt == 1:
                    self._ctx = None  # the server lost our context (new connection): authenticate again
            raise AuthenticationError(f"WinRM refused the credentials of user {self.endpoint.username!r} (HTTP 401)")

    async def _post_once(self, message: bytes) -> bytes | None:
        ep = self.endpoint
        headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
        if ep.auth == "basic":
            raw = f"{ep.username}:{ep.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            body = message
        else:
            if self._ctx is None:
                await self._authenticate()
            if ep.encrypted:
                headers["Content-Type"] = encryption.CONTENT_TYPE
                body = encryption.seal(self._ctx, message)
            else:
                body = message
        resp = await self._send(body, headers)
        if resp.status_code == 401:
            if ep.auth == "basic":
                raise AuthenticationError(f"WinRM refused the credentials of user {ep.username!r} (HTTP 401)")
            return None
        content = resp.content
        if ep.auth == "ntlm" and ep.encrypted and resp.headers.get("content-type", "").startswith("multipart/"):
            try:
                content = encryption.unseal(self._ctx, content)
            except Exception as exc:  # spnego and layout errors alike
                await self.aclose()
                raise CommunicatorError(f"cannot decrypt WinRM reply: {exc}") from exc
        if not content or (resp.status_code != 200 and b"Fault" not in content):
            raise CommunicatorError(f"WinRM answered HTTP {resp.status_code} with no SOAP reply")
        return content


def _negotiate_token(resp: httpx.Response) -> bytes | None:
    for value in resp.headers.get_list("www-authenticate"):
        for part in value.split(","):
            scheme, _, token = part.strip().partition(" ")
            if scheme.lower() in ("negotiate", "ntlm") and token:
                try:
                    return base64.b64decode(token.strip())
                except ValueError:
                    return None
    return None
