"""One publish call's connections: an httpx client, cached tokens, the Blob service and the ARM client."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import anyio

from aib_provider_azure.arm import ArmClient
from aib_provider_azure.blob import BlobService
from aib_provider_azure.credentials import TokenProvider
from aib_provider_azure.settings import AzureSettings


class AzureSession:
    """``async with AzureSession(settings, credential) as s:`` gives ``s.blob`` and ``s.arm``; closes both."""

    def __init__(self, settings: AzureSettings, credential: Any = None) -> None:
        self.settings = settings
        import httpx  # imported when a session opens: registering the provider does not load it

        self.tokens = TokenProvider(credential)
        limit = max(16, settings.upload_concurrency * 2)
        self.http = httpx.AsyncClient(
            verify=settings.verify(),
            timeout=httpx.Timeout(120.0, connect=20.0),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            follow_redirects=False,
        )
        self.blob = BlobService(self.http, self.tokens)
        self.arm = ArmClient(
            self.http,
            settings.arm_endpoint,
            self.tokens,
            scope=settings.arm_scope,
            poll_interval=settings.poll_interval,
        )

    async def __aenter__(self) -> AzureSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await self.http.aclose()
            await self.tokens.aclose()
