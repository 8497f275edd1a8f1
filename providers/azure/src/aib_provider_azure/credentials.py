"""Bearer tokens for ARM and Storage: an injected azure-core-style credential, else ``DefaultAzureCredential``."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import anyio

from aib_sdk.errors import DistributeError
from aib_sdk.redaction import register_secret


class AccessToken(NamedTuple):
    """azure-core's ``AccessToken`` shape."""

    token: str
    expires_on: int


class StaticTokenCredential:
    """An async token credential that always returns one fixed token (for tests and pre-issued tokens)."""

    def __init__(self, token: str, *, lifetime: int = 3600) -> None:
        self._token = token
        self._lifetime = lifetime
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self._token, int(time.time()) + self._lifetime)

    async def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "StaticTokenCredential(<hidden>)"


@dataclass
class _Cached:
    token: str
    expires_on: float


class TokenProvider:
    """Caches tokens per scope and refreshes them five minutes before expiry.

    ``credential`` may be async (``azure.identity.aio``) or sync (``azure.identity``; called in a worker thread).
    Without one, ``azure.identity.aio.DefaultAzureCredential`` is imported on first use and closed by :meth:`aclose`.
    """

    def __init__(self, credential: Any = None) -> None:
        self._credential = credential
        self._owned = False
        self._cache: dict[str, _Cached] = {}
        self._lock = anyio.Lock()

    def _default(self) -> Any:
        try:
            from azure.identity.aio import DefaultAzureCredential
        except ImportError as exc:  # pragma: no cover - azure-identity is a dependency
            raise DistributeError(
                "no Azure credential: pass BuildOptions(credential=…) or install azure-identity"
            ) from exc
        self._owned = True
        return DefaultAzureCredential()

    async def token(self, scope: str) -> str:
        async with self._lock:
            cached = self._cache.get(scope)
            if cached is not None and cached.expires_on - 300 > time.time():
                return cached.token
            if self._credential is None:
                self._credential = self._default()
            try:
                get_token = self._credential.get_token
                if inspect.iscoroutinefunction(get_token):
                    result = await get_token(scope)
                else:
                    result = await anyio.to_thread.run_sync(get_token, scope)
            except DistributeError:
                raise
            except Exception as exc:
                raise DistributeError(f"could not get an Azure token for {scope}: {exc}") from exc
            register_secret(str(result.token))  # masked in every sink (aib_sdk.redaction)
            self._cache[scope] = _Cached(str(result.token), float(result.expires_on))
            return str(result.token)

    async def aclose(self) -> None:
        if self._owned and self._credential is not None:
            close = getattr(self._credential, "close", None)
            if close is not None and inspect.iscoroutinefunction(close):
                await close()
        self._credential = None
