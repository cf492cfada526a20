"""Events this worker just logged, kept for its handler group so it need not decode them again.

The handler group reads ``log:<type>`` back from Redis; decoding and
validating an event costs about as much as it did in the pipeline (2-3 µs).
When the group runs in the worker that logged the event — always with one
worker, and for its own partitions with several — the pipeline leaves the
event object here, keyed by its origin (``topic/partition/offset#index``,
stored in the log entry), and the group takes it instead of decoding the
entry's JSON. Entries logged by other workers, or evicted, are decoded as
before: this is a cache, never the source of truth.

Bounded: only while this worker holds the group (:attr:`RecentlyLogged.active`)
and only for types with subscribers; the oldest entries are dropped past
``capacity``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from silvertine_streams.events import Event

__all__ = ["RecentlyLogged"]

CAPACITY = 50_000
"""Events kept at most (a few batches of lag; about 25 MB of market data)."""


class RecentlyLogged:
    """A bounded map from log-entry origin to the event logged from it.

    Args:
        wanted: whether an event type has handlers (only those are kept).
        capacity: events kept at most; the oldest go first.
    """

    __slots__ = ("active", "_events", "_wanted", "_capacity")

    def __init__(self, wanted: Callable[[str], bool], capacity: int = CAPACITY) -> None:
        self.active = False
        self._events: dict[str, Event] = {}
        self._wanted = wanted
        self._capacity = capacity

    def wants(self, event_type: str) -> bool:
        """Return whether events of ``event_type`` should be put here now."""
        return self.active and self._wanted(event_type)

    def put(self, logged: Iterable[tuple[str, Event]]) -> None:
        """Keep ``(origin, event)`` pairs of events just written to the log."""
        events = self._events
        events.update(logged)
        excess = len(events) - self._capacity
        if excess > 0:
            for origin in list(itertools.islice(events, excess)):
                del events[origin]

    def take(self, origin: str) -> Event | None:
        """Return (and forget) the event logged from ``origin``, if it is still here."""
        return self._events.pop(origin, None)

    def drain(self) -> list[Event]:
        """Return (and forget) every event kept, oldest first."""
        events = list(self._events.values())
        self._events.clear()
        return events

    def clear(self) -> None:
        """Forget everything (the group stopped running here)."""
        self._events.clear()

    def __len__(self) -> int:
        return len(self._events)
