"""The pure parts of ``EventMonitor``: raw Redis replies to rates, groups and entries."""

from __future__ import annotations

from datetime import UTC, datetime

from silvertine_streams.events import MarketDataEvent, encode_event
from silvertine_streams.observability.event_monitor import (
    RATE_SAMPLE,
    _audit_entry,
    _groups,
    _rate,
)


def test_the_rate_counts_the_last_minute_and_extrapolates_a_capped_sample() -> None:
    now_s = 1_000.0
    assert _rate([], now_s) == 0.0
    assert _rate(RuntimeError("ERR no such key"), now_s) == 0.0  # an error in the pipeline
    few = [(b"999000-0", []), (b"998000-0", [])]
    assert _rate(few, now_s) == 2.0
    # A full sample spanning 6 s of the minute: ten times as many per minute.
    capped = [(f"{994_000 + i}-0".encode(), []) for i in range(RATE_SAMPLE)][::-1]
    assert _rate(capped, now_s) == RATE_SAMPLE * 10


def test_consumer_groups_from_raw_and_decoded_replies() -> None:
    raw = [[b"name", b"g1", b"consumers", 2, b"pending", 5, b"last-delivered-id", b"1-0"]]
    assert _groups(raw) == [{"name": "g1", "consumers": 2, "pending": 5,
                             "last_delivered_id": "1-0"}]
    assert _groups([{"name": "g2", "consumers": 0, "pending": 0,
                     "last-delivered-id": "0-0"}])[0]["name"] == "g2"
    assert _groups(RuntimeError("ERR no such key")) == []


def test_a_log_entry_as_an_audit_entry() -> None:
    event = MarketDataEvent(symbol="AAPL", price=1.0)
    entry = _audit_entry((b"1700000000000-1", [b"event", encode_event(event),
                                               b"origin", b"events:market_data/1-0#0"]))
    assert entry["stream_id"] == "1700000000000-1"
    assert entry["published_at"] == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert entry["processor"] == "events:market_data/1-0#0"
    assert entry["data"]["event_id"] == event.event_id
    assert entry["timestamp"] == entry["data"]["timestamp"]
    broken = _audit_entry((b"1-0", [b"event", b"{not json"]))
    assert broken["data"] == {"undecodable": "{not json"} and broken["timestamp"] is None
