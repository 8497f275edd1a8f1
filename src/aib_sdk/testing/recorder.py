"""``EventRecorder``: an :data:`~aib_sdk.events.EventSink` that keeps every event for assertions."""

from __future__ import annotations

from typing import TypeVar

from aib_sdk.events import Event

E = TypeVar("E")


class EventRecorder:
    """A callable event sink that records events in order.

    Pass it as ``BuildOptions(on_event=recorder)`` or as ``emit`` of a run context, then assert on
    ``recorder.events``, ``recorder.of_kind(StepFinished)`` or ``recorder.kinds``.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of_kind(self, cls: type[E]) -> list[E]:
        """The recorded events that are instances of ``cls``, in order."""
        return [ev for ev in self.events if isinstance(ev, cls)]

    @property
    def kinds(self) -> list[str]:
        """The ``kind`` of every recorded event, in order."""
        return [ev.kind for ev in self.events]

    def clear(self) -> None:
        self.events.clear()
