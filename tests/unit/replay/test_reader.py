"""Decoding raw log pages and the id arithmetic of the reader (no Redis)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from silvertine_streams.events import MarketDataEvent, encode_event
from silvertine_streams.replay.reader import (
    decode_page,
    entry_ms,
    following_id,
    id_range,
    log_clock,
    mark_replayed,
)
from silvertine_streams.replay.replayer import ReplayError, parse_speed


def tick(n: int) -> MarketDataEvent:
    return MarketDataEvent(symbol="AAPL", price=100.0 + n, source="feed", sequence=n)


def test_a_page_decodes_in_one_piece_and_keeps_ids_aligned() -> None:
    events = [tick(n) for n in range(3)]
    reply = [[f"1700000000000-{n}".encode(), [b"event", encode_event(e), b"origin", b"o"]]
             for n, e in enumerate(events)]

    page = decode_page("market_data", reply)

    assert page.entry_ids == ["1700000000000-0", "1700000000000-1", "1700000000000-2"]
    assert page.events == events
    assert page.undecodable == []


def test_foreign_entries_are_skipped_and_reported_the_rest_kept() -> None:
    good = tick(1)
    reply = [
        [b"1-0", [b"event", encode_event(good)]],
        [b"2-0", [b"note", b"written by hand"]],
        [b"3-0", [b"origin", b"x", b"event", b'{"event_type":"market_data","price":-1}']],
        [b"4-0", [b"origin", b"x", b"event", encode_event(tick(2))]],  # event not first
    ]

    page = decode_page("market_data", reply)

    assert page.entry_ids == ["1-0", "4-0"]
    assert [e.sequence for e in page.events] == [1, 2]
    assert [entry_id for entry_id, _ in page.undecodable] == ["2-0", "3-0"]
    assert "no 'event' field" in page.undecodable[0][1]


def test_entries_logged_before_the_contract_still_replay() -> None:
    old_fill = (b'{"event_type":"fill","event_id":"f-1","timestamp":"2024-03-01T12:00:00Z",'
                b'"source":"venue","metadata":{},"sequence":3,"ts_ns":5,"fill_id":"x-1",'
                b'"order_id":"o-1","symbol":"AAPL","side":"buy","executed_qty":2.0,'
                b'"executed_price":10.0,"commission":0.0}')
    old_signal = old_fill.replace(b'"event_type":"fill"', b'"event_type":"signal"')
    page = decode_page("fill", [[b"1-0", [b"event", old_fill]], [b"2-0", [b"event", old_signal]]])
    assert [(e.event_id, getattr(e, "executed_quantity", None)) for e in page.events] == [
        ("f-1", 2.0)]
    assert [entry_id for entry_id, _ in page.undecodable] == ["2-0"]


def test_replies_decoded_to_text_work_too() -> None:
    reply = [["5-1", ["event", encode_event(tick(1)).decode()]]]
    assert decode_page("market_data", reply).entry_ids == ["5-1"]


def test_mark_replayed_sets_the_two_metadata_keys() -> None:
    page = decode_page("market_data", [[b"9-3", [b"event", encode_event(tick(1))]]])
    mark_replayed(page.events, page.entry_ids)
    assert page.events[0].metadata == {"replay": True, "replayed_from": "9-3"}


def test_id_range_is_since_inclusive_until_exclusive_in_log_time() -> None:
    since = datetime(2025, 1, 1, tzinfo=UTC)
    until = datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    start, end = id_range(since, until)
    assert start == f"{int(since.timestamp() * 1000)}-0"
    assert end == str(int(until.timestamp() * 1000) - 1)  # = last entry of the ms before
    assert id_range(None, None) == ("-", "+")
    assert id_range(datetime(2025, 1, 1), None)[0] == start  # naive = UTC


def test_id_helpers() -> None:
    assert following_id("17-4") == "17-5"
    assert entry_ms(b"1700000000123-7") == 1700000000123
    assert log_clock(tick(1), "2000-5") == pytest.approx(2.0 + 5e-9)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("max", "max"), ("realtime", "realtime"), ("step", "step"), ("2", 2.0), ("0.5", 0.5),
     ("10x", 10.0), (" MAX ", "max"), (3, 3.0)],
)
def test_parse_speed(text: str | float, expected: object) -> None:
    assert parse_speed(text) == expected


@pytest.mark.parametrize("text", ["fast", "0", "-2", "inf", "nan", ""])
def test_parse_speed_refuses_nonsense(text: str) -> None:
    with pytest.raises(ReplayError):
        parse_speed(text)
