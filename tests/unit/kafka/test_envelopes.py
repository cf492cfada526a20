"""Unit tests for silvertine_streams.kafka.envelopes: bounded by events and by bytes."""

from __future__ import annotations

import json

import pytest

from silvertine_streams.errors import EventTooLarge
from silvertine_streams.events import MarketDataEvent, decode_message
from silvertine_streams.kafka.envelopes import pack_envelopes, partition_for
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import load_settings


def ticks(symbol: str, count: int, blob: int = 0) -> list[MarketDataEvent]:
    return [MarketDataEvent(symbol=symbol, price=1.0 + n, source="feed", sequence=n + 1,
                            metadata={"blob": "x" * blob} if blob else {})
            for n in range(count)]


def test_envelopes_stay_under_the_byte_bound_and_keep_order() -> None:
    events = ticks("AAPL", 40, blob=1000)
    envelopes, oversize = pack_envelopes(events, 4, max_events=500, max_event_bytes=4096,
                                         max_message_bytes=8192)
    assert oversize == []
    assert len(envelopes) > 1 and all(len(e.payload) <= 8192 for e in envelopes)
    decoded = [ev for e in envelopes for ev in decode_message(e.payload).events]
    assert [e.event_id for e in decoded] == [e.event_id for e in events]
    assert {e.partition for e in envelopes} == {partition_for(b"AAPL", 4)}
    assert all(e.key == b"AAPL" for e in envelopes)


def test_the_event_bound_and_count_bound_both_hold() -> None:
    small, big = ticks("AAPL", 3), ticks("MSFT", 1, blob=5000)
    envelopes, oversize = pack_envelopes([*small, *big], 4, max_events=2,
                                         max_event_bytes=4096, max_message_bytes=1 << 20)
    assert [o.event for o in oversize] == big and oversize[0].size > 4096
    assert sorted(len(e.events) for e in envelopes) == [1, 2]
    assert all(json.loads(e.payload)[0]["symbol"] == "AAPL" for e in envelopes)


def test_the_publisher_refuses_an_oversize_event_before_sending() -> None:
    publisher = Publisher(load_settings(kafka_url="kafka://127.0.0.1:1",
                                        redis_url="redis://127.0.0.1:1/0",
                                        max_event_bytes=4096))
    [big] = ticks("AAPL", 1, blob=5000)
    with pytest.raises(EventTooLarge) as caught:
        publisher._encoded(big)
    assert caught.value.event_id == big.event_id and caught.value.limit == 4096
    assert "SILVERTINE_MAX_EVENT_BYTES" in str(caught.value)


async def test_publish_many_refuses_before_contacting_kafka() -> None:
    # Nothing listens on port 1: reaching Kafka would fail differently.
    publisher = Publisher(load_settings(kafka_url="kafka://127.0.0.1:1",
                                        redis_url="redis://127.0.0.1:1/0",
                                        max_event_bytes=4096, publish_max_lag=0,
                                        publish_max_backlog=0))
    with pytest.raises(EventTooLarge):
        await publisher.publish_many([*ticks("AAPL", 2), *ticks("MSFT", 1, blob=5000)])
