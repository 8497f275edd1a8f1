"""The one cancel flag of a run: :meth:`Builder.cancel` requests it, the execution honours it."""

from __future__ import annotations

from collections.abc import Callable

import anyio


class Cancellation:
    """Whether the run's cancellation was requested, and what a request does once the run has started.

    A request before the run starts is remembered; :meth:`attach` then cancels the run's scope at once. A request
    after :meth:`attach` first calls the run's ``on_request`` (it announces ``Canceling``), then cancels the scope.
    Only the first request counts.
    """

    def __init__(self) -> None:
        self.requested = False
        self._scope: anyio.CancelScope | None = None
        self._on_request: Callable[[], None] | None = None

    def request(self) -> None:
        if self.requested:
            return
        self.requested = True
        if self._on_request is not None:
            self._on_request()
        if self._scope is not None:
            self._scope.cancel()

    def attach(self, scope: anyio.CancelScope, on_request: Callable[[], None]) -> None:
        """Bind the run's cancel scope (cancelled now when a request came first)."""
        self._scope, self._on_request = scope, on_request
        if self.requested:
            scope.cancel()
