"""Whatever a message holds, decoding ends in events or rejects with a reason: never raises.

Hostile shapes: deep nesting, giant strings and arrays, duplicate keys, invalid UTF-8,
every event type, envelopes mixing good and bad events.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from silvertine_streams.events import EventType, decode_message
from silvertine_streams.events.codec import PREVIEW_BYTES

GOOD = {
    "market_data": {"event_type": "market_data", "symbol": "AAPL", "price": 1.5},
    "order": {"event_type": "order", "order_id": "o-1", "symbol": "AAPL", "side": "buy",
              "quantity": 1.0},
    "fill": {"event_type": "fill", "order_id": "o-1", "symbol": "AAPL",
             "executed_quantity": 1.0, "executed_price": 2.0},
    "signal": {"event_type": "signal", "symbol": "AAPL", "strategy_id": "s",
               "signal_type": "long", "strength": 0.5},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=30,
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "deep", "giant", "duplicate", "mixed", "json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(500, 30_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return (b'{"event_type":"market_data","symbol":"A","price":1,"metadata":{"x":'
                + opener * depth + b"1" + closer * depth + b"}}")
    if kind == "giant":
        size = draw(st.integers(60_000, 300_000))
        event = dict(GOOD[draw(st.sampled_from(sorted(GOOD)))])
        event["metadata"] = {"blob": "x" * size}
        return json.dumps(event).encode()
    if kind == "duplicate":
        return b'{"event_type":"market_data","symbol":"A","symbol":"B","price":1,"price":-1}'
    if kind == "mixed":
        events = draw(st.lists(st.one_of(
            st.sampled_from(list(GOOD.values())),
            st.dictionaries(st.text(max_size=8), json_values, max_size=4)), max_size=6))
        text = json.dumps(events).encode()
        if draw(st.booleans()):
            text = text.replace(b"AAPL", b"\xff\xfe", 1)  # invalid UTF-8 inside
        return text
    return json.dumps(draw(json_values)).encode()


@settings(max_examples=300, deadline=None)
@given(hostile_messages(), st.sampled_from(list(EventType)))
def test_decoding_never_raises_and_every_reject_has_a_reason(data: bytes,
                                                             expected: EventType) -> None:
    decoded = decode_message(data, expected)
    for reject in decoded.rejects:
        assert reject.reason.strip(), "a reject without a reason"
        assert len(reject.payload) <= max(len(data), PREVIEW_BYTES)
    for event in decoded.events:
        assert event.event_type == expected
    if not decoded.events:
        assert decoded.rejects or data.strip() in (b"[]",), data[:100]


def test_an_envelope_loses_only_its_oversize_event() -> None:
    big = dict(GOOD["market_data"], metadata={"blob": "x" * 70_000}, symbol="BIG")
    data = json.dumps([GOOD["market_data"], big, GOOD["market_data"]]).encode()
    decoded = decode_message(data, EventType.MARKET_DATA)
    assert [e.symbol for e in decoded.events] == ["AAPL", "AAPL"]
    [reject] = decoded.rejects
    assert reject.reason.startswith("too_large: event of ") and "sha256 " in reject.reason
    assert len(reject.payload) == PREVIEW_BYTES


def test_a_message_over_the_message_bound_is_rejected_whole_with_a_preview() -> None:
    data = json.dumps([GOOD["order"]] * 10).encode()
    decoded = decode_message(data, EventType.ORDER, max_message_bytes=100)
    assert decoded.events == []
    [reject] = decoded.rejects
    assert reject.reason.startswith(f"too_large: message of {len(data)} bytes")
    assert reject.payload == data[:PREVIEW_BYTES]
