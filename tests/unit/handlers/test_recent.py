"""Unit tests for silvertine_streams.handlers.recent and how a read batch uses it
(``positions._batch``: raw log entries to events, cached ones not decoded again)."""

from __future__ import annotations

from silvertine_streams.events import MarketDataEvent, encode_event
from silvertine_streams.handlers.positions import _batch
from silvertine_streams.handlers.recent import RecentlyLogged


def tick(n: int) -> MarketDataEvent:
    return MarketDataEvent(symbol="AAPL", price=100.0 + n, source="feed", sequence=n)


def entry(n: int, event: MarketDataEvent, origin: str | None = None) -> list[object]:
    fields: list[bytes] = [b"event", encode_event(event)]
    if origin is not None:
        fields += [b"origin", origin.encode()]
    return [f"1-{n}".encode(), fields]


def test_only_wanted_types_while_active_and_the_oldest_go_first() -> None:
    recent = RecentlyLogged(lambda t: t == "market_data", capacity=2)
    assert not recent.wants("market_data")  # the group does not run here
    recent.active = True
    assert recent.wants("market_data") and not recent.wants("order")
    a, b, c = tick(1), tick(2), tick(3)
    recent.put([("o/0/1#0", a), ("o/0/2#0", b)])
    recent.put([("o/0/3#0", c)])
    assert len(recent) == 2
    assert recent.take("o/0/1#0") is None  # evicted
    assert recent.take("o/0/3#0") is c and recent.take("o/0/3#0") is None
    recent.clear()
    assert len(recent) == 0


def test_a_batch_takes_what_this_worker_logged_and_decodes_the_rest_in_order() -> None:
    events = [tick(n) for n in range(1, 5)]
    recent = RecentlyLogged(lambda t: True)
    recent.active = True
    recent.put([("o/0/1#0", events[0]), ("o/0/3#0", events[2])])
    entries = [entry(1, events[0], "o/0/1#0"), entry(2, events[1], "o/0/2#0"),
               entry(3, events[2], "o/0/3#0"), entry(4, events[3])]
    batch = _batch("market_data", entries, recent)
    assert [e.event_id for e in batch.events] == [e.event_id for e in events]
    assert batch.events[0] is events[0] and batch.events[2] is events[2]  # not decoded
    assert batch.events[1] is not events[1]  # decoded from the entry
    assert (batch.last_id, batch.entries, batch.skipped) == ("1-4", 4, [])
    assert len(recent) == 0


def test_entries_that_are_not_events_are_named_and_left_out() -> None:
    good = tick(1)
    entries = [entry(1, good, "o/0/1#0"), [b"1-2", [b"note", b"x"]],
               [b"1-3", [b"event", b"{not json", b"origin", b"o/0/3#0"]]]
    batch = _batch("market_data", entries, None)
    assert [e.event_id for e in batch.events] == [good.event_id]
    assert batch.entries == 3 and [entry_id for entry_id, _ in batch.skipped] == ["1-2", "1-3"]


def test_drain_returns_everything_oldest_first_and_forgets_it() -> None:
    recent = RecentlyLogged(lambda t: True)
    recent.active = True
    events = [tick(n) for n in range(1, 4)]
    recent.put([(f"o/0/{n}#0", e) for n, e in enumerate(events)])
    assert recent.drain() == events
    assert len(recent) == 0 and recent.drain() == []
