"""The event hub of one run: fans every event out to subscribers' streams, listeners and a callback."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aib_sdk.events import Event, EventSink
from aib_sdk.redaction import redact

_log = logging.getLogger("aib_sdk.builder")

HISTORY_LIMIT = 200_000
"""Events kept for subscribers that join late (a long build's log lines beyond this are not replayed)."""


class EventHub:
    """Emits synchronously and never blocks: subscriber streams are unbounded.

    A subscriber joining late first receives the events emitted so far, so ``builder.events()`` misses nothing
    even when its consumer task starts after the run. :meth:`close` (after ``RunFinished``) ends every stream.
    """

    def __init__(self, callback: EventSink | None = None) -> None:
        self._callback = callback
        self._listeners: list[Callable[[Event], None]] = []
        self._streams: list[MemoryObjectSendStream[Event]] = []
        self._history: list[Event] = []
        self.closed = False

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously for every later event (internal bookkeeping)."""
        self._listeners.append(listener)

    def subscribe(self) -> MemoryObjectReceiveStream[Event]:
        """A stream of every event of the run (past ones replayed first); it ends after ``RunFinished``."""
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
        for event in self._history:
            send.send_nowait(event)
        if self.closed:
            send.close()
        else:
            self._streams.append(send)
        return receive

    def emit(self, event: Event) -> None:
        if self.closed:
            return
        event = redact(event)  # the one redaction layer: every consumer sees only redacted events
        if len(self._history) < HISTORY_LIMIT:
            self._history.append(event)
        for listener in self._listeners:
            listener(event)
        if self._callback is not None:
            try:
                self._callback(event)
            except Exception:  # a consumer's bug must not break the build
                _log.exception("on_event callback failed on %s", event.kind)
        for stream in list(self._streams):
            try:
                stream.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._streams.remove(stream)

    def close(self) -> None:
        """End every subscriber's stream; later events are dropped."""
        self.closed = True
        for stream in self._streams:
            stream.close()
        self._streams.clear()
