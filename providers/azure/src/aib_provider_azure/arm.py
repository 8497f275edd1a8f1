"""An ARM REST client over httpx: bearer tokens, retries on 429/5xx, long-running operations, ARM error mapping.

Long-running operations follow ARM's rules: a ``201``/``202`` (or ``200``) response carrying ``Azure-AsyncOperation``
is polled there until its ``status`` is terminal (Succeeded, Failed, Canceled); otherwise ``Location`` is polled until
it stops answering ``202``; a PUT without either is polled on the resource until its ``provisioningState`` is
terminal. Every poll waits ``Retry-After`` (or the client's poll interval).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from aib_provider_azure.credentials import TokenProvider
from aib_provider_azure.retry import DEFAULT_POLICY, RetryPolicy, retry_after, send_with_retry
from aib_sdk.errors import ConflictError, DistributeError

if TYPE_CHECKING:
    import httpx

TERMINAL = frozenset({"succeeded", "failed", "canceled", "cancelled"})
COMPUTE_API = "2024-03-02"
GALLERY_API = "2023-07-03"

PollHook = Callable[[], Awaitable[None]]


class ArmError(DistributeError):
    """ARM answered with an error: ``code`` and ``message`` from its ``{"error": {code, message}}`` body."""

    def __init__(self, what: str, status: int, code: str, message: str) -> None:
        self.status, self.code, self.arm_message = status, code, message
        super().__init__(f"{what}: HTTP {status} {code}: {message}")


def arm_error(what: str, response: httpx.Response) -> ArmError:
    """Map a failed ARM response to :class:`ArmError` (a :class:`ConflictError` subclass for 409)."""
    code, message = "", response.reason_phrase
    try:
        body = response.json()
        err = body.get("error", body) if isinstance(body, dict) else {}
        code, message = str(err.get("code", "")), str(err.get("message", message))
    except ValueError:
        pass
    if response.status_code in (409, 412):  # 412: a conditional request (If-None-Match: *) found it existing
        return ArmConflict(what, response.status_code, code, message)
    return ArmError(what, response.status_code, code, message)


class ArmConflict(ArmError, ConflictError):
    """ARM answered 409 Conflict."""


class ArmClient:
    """Requests against one ARM endpoint with one credential."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoint: str,
        tokens: TokenProvider,
        *,
        scope: str,
        policy: RetryPolicy = DEFAULT_POLICY,
        poll_interval: float = 5.0,
        timeout: float = 3 * 3600,
    ) -> None:
        self.client = client
        self.endpoint = endpoint.rstrip("/")
        self.tokens = tokens
        self.scope = scope
        self.policy = policy
        self.poll_interval = poll_interval
        self.timeout = timeout

    def url(self, path_or_url: str) -> str:
        return path_or_url if path_or_url.startswith(("http://", "https://")) else self.endpoint + path_or_url

    async def send(
        self,
        method: str,
        path: str,
        *,
        api_version: str | None = None,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request with retries; returns the response whatever its status."""
        query = dict(params or {})
        if api_version:
            query["api-version"] = api_version
        url = self.url(path)

        async def build() -> httpx.Request:
            sent = {**(headers or {}), "Authorization": "Bearer " + await self.tokens.token(self.scope)}
            return self.client.build_request(method, url, params=query or None, json=body, headers=sent)

        return await send_with_retry(self.client, build, what=f"{method} {url.split('?')[0]}", policy=self.policy)

    async def get(self, resource_id: str, api_version: str, *, params: Mapping[str, str] | None = None) -> Any:
        """GET a resource's JSON; None when it does not exist (404)."""
        response = await self.send("GET", resource_id, api_version=api_version, params=params)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise arm_error(f"GET {resource_id}", response)
        return response.json()

    async def list(self, path: str, api_version: str) -> list[Any]:
        """Every item of a list operation, following ``nextLink``."""
        items: list[Any] = []
        url: str | None = path
        version: str | None = api_version
        while url:
            response = await self.send("GET", url, api_version=version)
            if response.status_code == 404:
                return items
            if response.status_code != 200:
                raise arm_error(f"GET {path}", response)
            page = response.json()
            items.extend(page.get("value", []))
            url, version = page.get("nextLink"), None
        return items

    async def put(
        self,
        resource_id: str,
        body: Mapping[str, Any],
        api_version: str,
        *,
        on_poll: PollHook | None = None,
        create_only: bool = False,
        on_accepted: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """PUT a resource and wait for the operation; return the final resource.

        ``create_only`` sends ``If-None-Match: *``: the service refuses (412, raised as :class:`ArmConflict`)
        when the resource exists, so a conflict with another publisher is decided by ARM, not by a prior GET.
        ``on_accepted`` is awaited once the service has accepted the PUT (the resource is then this caller's).
        """
        headers = {"If-None-Match": "*"} if create_only else None
        response = await self.send("PUT", resource_id, api_version=api_version, body=body, headers=headers)
        if response.status_code < 400 and on_accepted is not None:
            await on_accepted()
        return await self._finish(f"PUT {resource_id}", response, resource_id, api_version, on_poll)

    async def post(self, path: str, api_version: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST an action and wait for it; return the operation's result body (or None)."""
        response = await self.send("POST", path, api_version=api_version, body=body)
        return await self._finish(f"POST {path}", response, None, api_version, None)

    async def delete(self, resource_id: str, api_version: str) -> None:
        """DELETE a resource and wait until it is gone; a missing resource is fine."""
        response = await self.send("DELETE", resource_id, api_version=api_version)
        if response.status_code in (200, 204, 404):
            return
        await self._finish(f"DELETE {resource_id}", response, None, api_version, None)

    async def _finish(
        self,
        what: str,
        response: httpx.Response,
        resource_id: str | None,
        api_version: str,
        on_poll: PollHook | None,
    ) -> Any:
        if response.status_code >= 400:
            raise arm_error(what, response)
        async_op = response.headers.get("azure-asyncoperation")
        location = response.headers.get("location")
        body = response.json() if response.content else None
        wait = retry_after(response)
        try:
            with anyio.fail_after(self.timeout):
                return await self._wait(
                    what, response, body, async_op, location, wait, resource_id, api_version, on_poll
                )
        except TimeoutError as exc:
            raise DistributeError(f"{what}: still not finished after {self.timeout:.0f}s") from exc

    async def _wait(
        self,
        what: str,
        response: httpx.Response,
        body: Any,
        async_op: str | None,
        location: str | None,
        wait: float | None,
        resource_id: str | None,
        api_version: str,
        on_poll: PollHook | None,
    ) -> Any:
        """Poll the operation ``response`` started, per ARM's rules; return the final resource or result."""
        if async_op:
            operation = await self._poll_async_operation(what, async_op, wait, on_poll)
            if resource_id is None:
                return operation.get("properties", {}).get("output") if isinstance(operation, dict) else None
        elif location and response.status_code in (201, 202):
            result = await self._poll_location(what, location, wait, on_poll)
            if resource_id is None:
                return result
        elif resource_id is not None and _state(body) not in (TERMINAL | {None}):
            return await self._poll_resource(what, resource_id, api_version, wait, on_poll)
        else:
            _raise_failed(what, body)
            return body
        final = await self.get(resource_id, api_version)
        if final is None:
            raise DistributeError(f"{what}: the operation succeeded but the resource is gone")
        _raise_failed(what, final)
        return final

    async def _sleep(self, wait: float | None) -> None:
        await anyio.sleep(self.poll_interval if wait is None else min(wait, self.policy.cap))

    async def _poll_async_operation(self, what: str, url: str, wait: float | None, on_poll: PollHook | None) -> Any:
        while True:
            await self._sleep(wait)
            if on_poll:
                await on_poll()
            response = await self.send("GET", url)
            if response.status_code != 200:
                raise arm_error(f"{what} (polling)", response)
            body = response.json()
            status = str(body.get("status", "")).lower()
            if status in TERMINAL:
                if status != "succeeded":
                    err = body.get("error") or {}
                    raise ArmError(
                        what, 200, str(err.get("code", status.title())), str(err.get("message", f"operation {status}"))
                    )
                return body
            wait = retry_after(response)

    async def _poll_location(self, what: str, url: str, wait: float | None, on_poll: PollHook | None) -> Any:
        while True:
            await self._sleep(wait)
            if on_poll:
                await on_poll()
            response = await self.send("GET", url)
            if response.status_code == 202:
                wait = retry_after(response)
                continue
            if response.status_code >= 400:
                raise arm_error(f"{what} (polling)", response)
            return response.json() if response.content else None

    async def _poll_resource(
        self, what: str, resource_id: str, api_version: str, wait: float | None, on_poll: PollHook | None
    ) -> Any:
        while True:
            await self._sleep(wait)
            if on_poll:
                await on_poll()
            body = await self.get(resource_id, api_version)
            if body is None:
                raise DistributeError(f"{what}: the resource disappeared while being created")
            if _state(body) in TERMINAL:
                _raise_failed(what, body)
                return body
            wait = None


def _state(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    state = body.get("properties", {}).get("provisioningState")
    return str(state).lower() if state else None


def _raise_failed(what: str, body: Any) -> None:
    state = _state(body)
    if state not in (None, "succeeded"):
        raise ArmError(what, 200, f"Provisioning{str(state).title()}", f"provisioningState is {state}")
