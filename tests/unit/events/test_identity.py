"""Events sent without event_id / timestamp get values that survive redelivery."""

from __future__ import annotations

from datetime import UTC, datetime

from silvertine_streams.events import (
    MarketDataEvent,
    content_fingerprint,
    decode_message,
    encode_event,
)
from silvertine_streams.events.identity import fill_missing_identity

BARE = b'[{"event_type":"market_data","symbol":"AAPL","price":1.5},' \
       b'{"event_type":"market_data","symbol":"MSFT","price":2.5}]'


def test_missing_ids_and_timestamps_come_from_the_message_coordinates() -> None:
    first = fill_missing_identity(decode_message(BARE).events, BARE, "silvertine.md/3/17", 1.7e9)
    again = fill_missing_identity(decode_message(BARE).events, BARE, "silvertine.md/3/17", 1.7e9)
    assert [e.event_id for e in first] == ["silvertine.md/3/17#0", "silvertine.md/3/17#1"]
    assert {e.timestamp for e in first} == {datetime.fromtimestamp(1.7e9, tz=UTC)}
    # A redelivered copy is the same event: same id, same fingerprint.
    assert [content_fingerprint(e) for e in first] == [content_fingerprint(e) for e in again]


def test_events_that_carry_their_identity_are_left_alone() -> None:
    event = MarketDataEvent(symbol="AAPL", price=1.0)
    raw = encode_event(event)
    assert fill_missing_identity(decode_message(raw).events, raw, "o", 1.7e9) == [event]


def test_without_a_message_time_only_the_id_is_filled() -> None:
    decoded = decode_message(BARE).events
    filled = fill_missing_identity(decoded, BARE, "events:md/1-0", None)
    assert [e.event_id for e in filled] == ["events:md/1-0#0", "events:md/1-0#1"]
    assert [e.timestamp for e in filled] == [e.timestamp for e in decoded]


def test_events_that_carry_ids_but_no_timestamp_get_only_the_message_time() -> None:
    raw = (b'[{"event_type":"market_data","event_id":"a-1","symbol":"AAPL","price":1.5},'
           b'{"event_type":"market_data","event_id":"a-2","symbol":"AAPL","price":1.6}]')
    filled = fill_missing_identity(decode_message(raw).events, raw, "silvertine.md/0/9", 1.7e9)
    assert [e.event_id for e in filled] == ["a-1", "a-2"]
    assert {e.timestamp for e in filled} == {datetime.fromtimestamp(1.7e9, tz=UTC)}


def test_a_metadata_key_named_event_id_is_not_an_id() -> None:
    # The measured bug: a substring test saw "event_id" in the metadata, took the
    # event for one that carries its id, and a redelivery got a fresh uuid4.
    raw = (b'{"event_type":"market_data","symbol":"AAPL","price":1.5,'
           b'"metadata":{"event_id":"upstream-7","timestamp":"2026-01-01T00:00:00Z"}}')
    first = fill_missing_identity(decode_message(raw).events, raw, "silvertine.md/0/4", 1.7e9)
    again = fill_missing_identity(decode_message(raw).events, raw, "silvertine.md/0/4", 1.7e9)
    assert [e.event_id for e in first] == ["silvertine.md/0/4#0"] == [e.event_id for e in again]
    assert first[0].timestamp == datetime.fromtimestamp(1.7e9, tz=UTC) == again[0].timestamp
    assert first[0].metadata["event_id"] == "upstream-7"  # the metadata is left as it was


def test_identity_is_decided_per_event_of_an_envelope() -> None:
    raw = (b'[{"event_type":"market_data","event_id":"a-1","symbol":"AAPL","price":1.5,'
           b'"timestamp":"2026-01-01T00:00:00Z"},'
           b'{"event_type":"market_data","symbol":"AAPL","price":1.6}]')
    filled = fill_missing_identity(decode_message(raw).events, raw, "silvertine.md/0/9", 1.7e9)
    assert [e.event_id for e in filled] == ["a-1", "silvertine.md/0/9#1"]
    assert filled[0].timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert filled[1].timestamp == datetime.fromtimestamp(1.7e9, tz=UTC)
