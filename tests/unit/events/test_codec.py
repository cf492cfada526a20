"""Unit tests for the wire codec: round trips, every rejection class, fingerprints."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from silvertine_streams.errors import InvalidEvent
from silvertine_streams.events import (
    DecodedMessage,
    Event,
    EventType,
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    Rejected,
    SignalEvent,
    SignalType,
    SystemEvent,
    codec,
    content_fingerprint,
    decode_event,
    decode_message,
    encode_batch,
    encode_event,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
VALID_TYPES = "fill, market_data, order, signal, system"


def examples() -> list[Event]:
    return [
        MarketDataEvent(symbol="AAPL", price=100.5, bid=100.4, ask=100.6, timestamp=T0,
                        metadata={"venue": "XNAS"}, sequence=1),
        OrderEvent(order_id="o-1", symbol="AAPL", side=OrderSide.BUY, quantity=10.0,
                   timestamp=T0),
        FillEvent(order_id="o-1", symbol="AAPL", executed_quantity=10.0, executed_price=100.5,
                  trade_id="t-1", side=OrderSide.BUY, timestamp=T0),
        SignalEvent(symbol="AAPL", strategy_id="s-1", signal_type=SignalType.SHORT,
                    strength=-0.25, reason="cross", stop_loss=101.0, timestamp=T0),
        SystemEvent(kind="circuit_open", details={"handler": "risk"}, timestamp=T0),
    ]  # fmt: skip


def ticks(count: int) -> list[MarketDataEvent]:
    return [
        MarketDataEvent(symbol="AAPL", price=100.0 + i, timestamp=T0, sequence=i)
        for i in range(count)
    ]


def market_json(**fields: Any) -> bytes:
    """One market-data event as JSON text, with ``fields`` overriding valid ones."""
    body: dict[str, Any] = {"event_type": "market_data", "symbol": "AAPL", "price": 1.0}
    return json.dumps(body | fields).encode()


def only_reject(data: bytes, expected_type: EventType | None = None) -> Rejected:
    result = decode_message(data, expected_type)
    assert result.events == []
    assert len(result.rejects) == 1
    return result.rejects[0]


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("event", examples(), ids=lambda e: e.event_type.value)
def test_single_event_round_trip(event: Event) -> None:
    data = encode_event(event)
    assert isinstance(data, bytes)
    assert json.loads(data)["event_type"] == event.event_type.value
    assert decode_event(data) == event
    assert decode_message(data) == DecodedMessage(events=[event], rejects=[])
    assert decode_message(data, event.event_type).events == [event]


def test_envelope_round_trip_keeps_order() -> None:
    events: list[Event] = [*ticks(50)]
    data = encode_batch(events)
    assert json.loads(data)[0]["price"] == 100.0
    assert decode_message(data, EventType.MARKET_DATA) == DecodedMessage(events=events, rejects=[])


def test_mixed_envelope_decodes_without_expected_type() -> None:
    events = examples()
    assert decode_message(encode_batch(events)).events == events
    assert decode_message(encode_batch(tuple(events))).events == events
    assert decode_message(encode_batch(event for event in events)).events == events  # type: ignore[arg-type]  # any iterable works at runtime


def test_empty_envelope_is_nothing() -> None:
    assert decode_message(b"[]") == DecodedMessage(events=[], rejects=[])
    assert decode_message(b" [ ] ", EventType.ORDER) == DecodedMessage(events=[], rejects=[])


def test_missing_optional_fields_get_defaults() -> None:
    event = decode_event(b'{"event_type":"market_data","symbol":"AAPL","price":3}')
    assert isinstance(event, MarketDataEvent)
    assert event.price == 3.0 and type(event.price) is float
    assert event.source == "" and event.sequence is None and event.ts_ns > 0


def test_valid_message_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_slow_path(*args: object) -> DecodedMessage:
        raise AssertionError("a valid message must decode in one call")

    monkeypatch.setattr(codec, "_decode_each", no_slow_path)
    assert len(decode_message(encode_batch(ticks(3))).events) == 3
    assert len(decode_message(encode_batch(ticks(3)), EventType.MARKET_DATA).events) == 3


# --- rejections ----------------------------------------------------------------

REJECTIONS: list[tuple[str, bytes, str]] = [
    ("not json", b"hello", "JSON is malformed: invalid character (byte 0)"),
    ("empty", b"", "Empty message: expected an event JSON object"),
    ("blank", b"  \n", "Empty message: expected an event JSON object"),
    ("not utf-8", b"\xff\xfe", "JSON is malformed: invalid character (byte 0)"),
    ("trailing garbage", market_json() + b"x", "JSON is malformed: trailing characters"),
    ("json string", b'"AAPL"', "Expected an event object or an array of events, got `str`"),
    ("json number", b"3", "Expected an event object or an array of events, got `int`"),
    ("json null", b"null", "Expected an event object or an array of events, got `null`"),
    ("truncated envelope", b'[{"event_type":"order"',
     "JSON is malformed: input data was truncated"),
    ("unknown event_type", market_json(event_type="quote"),
     f"Unknown event_type 'quote'; valid types: {VALID_TYPES} - at `$.event_type`"),
    ("missing event_type", b'{"symbol":"AAPL","price":1.0}',
     f"Object missing required field `event_type`; valid types: {VALID_TYPES}"),
    ("event_type not a string", market_json(event_type=3),
     f"Expected `str` - at `$.event_type`; valid types: {VALID_TYPES}"),
    ("missing price", b'{"event_type":"market_data","symbol":"AAPL"}',
     "Price must be positive"),
    ("missing symbol", b'{"event_type":"market_data","price":1.0}', "Symbol cannot be empty"),
    ("order without side", b'{"event_type":"order","order_id":"o","symbol":"A","quantity":1}',
     "Object missing required field `side`"),
    ("unknown field", market_json(px=1), "Object contains unknown field `px`"),
    ("wrong type", market_json(price="100"), "Expected `float`, got `str` - at `$.price`"),
    ("bool as number", market_json(price=True), "Expected `float`, got `bool` - at `$.price`"),
    ("bool as int", market_json(sequence=False),
     "Expected `int | null`, got `bool` - at `$.sequence`"),
    ("NaN literal", b'{"event_type":"market_data","symbol":"AAPL","price":NaN}',
     "JSON is malformed: invalid character (byte 52): NaN and Infinity are not JSON numbers"),
    ("Infinity literal", b'{"event_type":"market_data","symbol":"AAPL","price":Infinity}',
     "NaN and Infinity are not JSON numbers"),
    ("-Infinity literal", b'{"event_type":"market_data","symbol":"AAPL","price":-Infinity}',
     "NaN and Infinity are not JSON numbers"),
    ("1e999", b'{"event_type":"market_data","symbol":"AAPL","price":1e999}',
     "Number out of range (not a finite float) - at `$.price`"),
    ("-1e999 in metadata", b'{"event_type":"market_data","symbol":"AAPL","price":1,'
     b'"metadata":{"x":-1e999}}', "Number out of range (not a finite float)"),
    ("seed rule", market_json(price=-1), "Price must be positive"),
    ("seed rule bid/ask", market_json(bid=2.0, ask=1.0), "Bid cannot exceed ask"),
    ("seed rule order", b'{"event_type":"order","order_id":"o","symbol":"A","side":"buy",'
     b'"quantity":1,"order_type":"limit"}', "limit orders require price"),
    ("bad enum", b'{"event_type":"order","order_id":"o","symbol":"A","side":"long",'
     b'"quantity":1}', "Invalid enum value 'long' - at `$.side`; valid values: buy, sell"),
    ("old signal type", b'{"event_type":"signal","symbol":"A","strategy_id":"s",'
     b'"signal_type":"sell"}', "Invalid enum value 'sell' - at `$.signal_type`; valid values: "
     "long, short, exit, neutral (the old buy, sell and hold are not translated"),
    ("naive timestamp", market_json(timestamp="2024-01-01T00:00:00"),
     "Timestamp must be timezone-aware UTC"),
    ("offset timestamp", market_json(timestamp="2024-01-01T00:00:00+02:00"),
     "Timestamp must be timezone-aware UTC"),
    ("old timestamp", market_json(timestamp="1970-01-01T00:00:00Z"),
     "Timestamp 1970-01-01T00:00:00+00:00 is implausible"),
    ("bad timestamp", market_json(timestamp="yesterday"),
     "Invalid RFC3339 encoded datetime - at `$.timestamp`"),
    ("negative sequence", market_json(sequence=-1), "sequence must be between 0 and 2**63-1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "reason"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_rejections_carry_a_reason_and_the_payload(payload: bytes, reason: str) -> None:
    reject = only_reject(payload)
    assert reason in reject.reason
    assert reject.payload == payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [r[1:] for r in REJECTIONS if not r[1].lstrip().startswith(b"[")],
    ids=[r[0] for r in REJECTIONS if not r[1].lstrip().startswith(b"[")],
)
def test_decode_event_raises_invalid_event(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(payload)
    assert info.value.payload == payload
    assert reason.replace(" or an array of events", "") in info.value.reason


def test_decode_event_refuses_an_envelope() -> None:
    with pytest.raises(InvalidEvent, match="^Expected an event object, got `array`$"):
        decode_event(encode_batch(ticks(2)))


ITEM_REJECTIONS = [r for r in REJECTIONS if r[1][:1] == b"{" and r[0] != "trailing garbage"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [r[1:] for r in ITEM_REJECTIONS],
    ids=[r[0] for r in ITEM_REJECTIONS],
)
def test_one_bad_event_in_an_envelope_loses_only_itself(payload: bytes, reason: str) -> None:
    good = ticks(4)
    data = b"[" + b",".join([encode_event(good[0]), encode_event(good[1]), payload,
                             encode_event(good[2]), encode_event(good[3])]) + b"]"  # fmt: skip
    result = decode_message(data, EventType.MARKET_DATA)
    assert result.events == good
    assert len(result.rejects) == 1
    assert result.rejects[0].payload == payload  # the event's own bytes, not the envelope
    assert reason in result.rejects[0].reason


def test_python_json_nan_in_an_envelope_loses_only_that_event() -> None:
    # Python's json.dumps writes NaN; msgspec then refuses the whole array.
    good = [e.to_dict() for e in ticks(3)]
    bad = good[1] | {"price": float("nan"), "event_id": "bad"}
    data = json.dumps([good[0], bad, good[2]], indent=1).encode()
    result = decode_message(data)
    assert [e.event_id for e in result.events] == [good[0]["event_id"], good[2]["event_id"]]
    assert len(result.rejects) == 1
    assert json.loads(result.rejects[0].payload.replace(b"NaN", b"null"))["event_id"] == "bad"
    assert "NaN and Infinity are not JSON numbers" in result.rejects[0].reason


@pytest.mark.parametrize(
    "data",
    [
        b'[{"event_type":"market_data","symbol":"A","price":1} x]',
        b'[{"event_type":"market_data","symbol":"A","price":NaN} {"a":1}]',
        b'[{"event_type":"market_data","symbol":"A","price":NaN},]',
        b'[{"event_type":"market_data","symbol":"A","price":NaN}] x',
        b'[{"event_type":"market_data","symbol":"A","price":NaN}',
        b'[{"event_type":"market_data","symbol":"A","price":NaN}, \xff]',
    ],
)
def test_a_structurally_broken_envelope_is_rejected_whole(data: bytes) -> None:
    reject = only_reject(data)
    assert reject.payload == data
    assert reject.reason.startswith("JSON is malformed")


def test_envelope_with_several_bad_items() -> None:
    good = ticks(2)
    data = (
        b"[ 3, "
        + encode_event(good[0])
        + b', {"event_type":"fill"}, [1], '
        + encode_event(good[1])
        + b"]"
    )
    result = decode_message(data)
    assert result.events == good
    assert [(r.payload, r.reason) for r in result.rejects] == [
        (b"3", "Expected an event object, got `int`"),
        (b'{"event_type":"fill"}', "Order ID cannot be empty"),
        (b"[1]", "Expected an event object, got `array`"),
    ]


def test_expected_type_rejects_other_types_naming_both() -> None:
    order = examples()[1]
    reject = only_reject(encode_event(order), EventType.MARKET_DATA)
    assert reject.reason == (
        "event_type 'order' does not belong here: expected 'market_data' events only"
    )
    assert reject.payload == encode_event(order)
    tick = ticks(1)[0]
    result = decode_message(encode_batch([tick, order, tick]), EventType.MARKET_DATA)
    assert result.events == [tick, tick]
    assert [r.payload for r in result.rejects] == [encode_event(order)]
    assert "'order'" in result.rejects[0].reason and "'market_data'" in result.rejects[0].reason


def test_missing_event_type_is_rejected_even_with_an_expected_type() -> None:
    data = b'{"symbol":"AAPL","price":1.0}'
    for expected in (None, EventType.MARKET_DATA):
        assert "missing required field `event_type`" in only_reject(data, expected).reason
    envelope = b"[" + encode_event(ticks(1)[0]) + b"," + data + b"]"
    result = decode_message(envelope, EventType.MARKET_DATA)
    assert len(result.events) == 1 and [r.payload for r in result.rejects] == [data]


def test_expected_type_may_be_given_as_its_value() -> None:
    tick = ticks(1)[0]
    assert decode_message(encode_event(tick), "market_data").events == [tick]  # type: ignore[arg-type]  # str accepted at runtime


def test_decode_errors_are_validation_errors_for_msgspec_users() -> None:
    with pytest.raises(msgspec.ValidationError, match="^Price must be positive$"):
        msgspec.json.decode(market_json(price=0), type=MarketDataEvent)


# --- the engine's pre-contract shape ----------------------------------------------

OLD_FILL = (b'{"event_type":"fill","event_id":"f-old","timestamp":"2024-03-01T12:00:00Z",'
            b'"source":"venue","metadata":{"executed_qty":1},"sequence":null,"ts_ns":5,'
            b'"fill_id":"f-1","order_id":"o-1","symbol":"AAPL","side":"buy",'
            b'"executed_qty":3,"executed_price":10.5,"commission":0.0}')
OLD_ORDER = (b'{"event_type":"order","event_id":"o-old","timestamp":"2024-03-01T12:00:00Z",'
             b'"ts_ns":5,"order_id":"o-1","symbol":"AAPL","side":"sell","quantity":2.0,'
             b'"strategy_id":null,"time_in_force":"day"}')


def test_old_fill_name_is_read_and_the_contract_name_written() -> None:
    event = decode_event(OLD_FILL)
    assert isinstance(event, FillEvent)
    assert event.executed_quantity == 3.0 and event.fill_id == "f-1"
    assert event.metadata == {"executed_qty": 1}  # only the field is renamed
    assert b'"executed_quantity":3.0' in encode_event(event)
    assert b'"executed_qty"' not in encode_event(event).replace(b'{"executed_qty":1}', b"")
    envelope = b"[" + OLD_FILL + b"," + OLD_FILL.replace(b"f-old", b"f-old-2") + b"]"
    result = decode_message(envelope, EventType.FILL)
    assert result.rejects == [] and [e.event_id for e in result.events] == ["f-old", "f-old-2"]


def test_old_order_without_a_strategy_is_read() -> None:
    event = decode_event(OLD_ORDER)
    assert isinstance(event, OrderEvent) and event.strategy_id == ""
    assert decode_message(OLD_ORDER).events == [event]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (OLD_FILL.replace(b'"executed_qty":3', b'"executed_qty":0'),
         "Executed quantity must be positive"),
        (OLD_FILL.replace(b'"executed_qty":3', b'"executed_qty":3,"executed_quantity":3'),
         "Object contains unknown field `executed_qty`"),
        (OLD_ORDER.replace(b'"side":"sell",', b""), "Object missing required field `side`"),
        (b'{"event_type":"signal","symbol":"A","strategy_id":null}',
         "Expected `str`, got `null` - at `$.strategy_id`"),
    ],
)  # fmt: skip
def test_old_shapes_still_obey_every_rule(payload: bytes, reason: str) -> None:
    assert only_reject(payload).reason == reason


# --- fingerprints ---------------------------------------------------------------


def test_fingerprint_is_16_hex_chars() -> None:
    for event in examples():
        assert re.fullmatch(r"[0-9a-f]{16}", content_fingerprint(event))


def test_fingerprint_ignores_ingress_fields_and_survives_the_wire() -> None:
    event = examples()[0]
    redelivered = event.with_changes(ts_ns=event.ts_ns + 5_000_000, sequence=99)
    assert content_fingerprint(redelivered) == content_fingerprint(event)
    assert content_fingerprint(decode_event(encode_event(event))) == content_fingerprint(event)
    no_sequence = event.with_changes(sequence=None)
    assert content_fingerprint(no_sequence) == content_fingerprint(event)


def test_fingerprint_ignores_metadata_key_order_and_int_vs_float() -> None:
    a = MarketDataEvent(
        symbol="A", price=1, event_id="e", timestamp=T0, metadata={"x": 1, "y": {"p": 1, "q": 2}}
    )
    b = MarketDataEvent(symbol="A", price=1.0, event_id="e", timestamp=T0,
                        metadata={"y": {"q": 2, "p": 1}, "x": 1})  # fmt: skip
    assert content_fingerprint(a) == content_fingerprint(b)


@pytest.mark.parametrize(
    "changes",
    [{"price": 100.51}, {"symbol": "MSFT"}, {"volume": 1.0}, {"bid": 100.3},
     {"event_id": "other"}, {"source": "feed-b"}, {"metadata": {"venue": "XNYS"}},
     {"timestamp": datetime(2024, 3, 1, 12, 0, 0, 1, tzinfo=UTC)}],
)  # fmt: skip
def test_fingerprint_changes_with_content(changes: dict[str, Any]) -> None:
    event = examples()[0]
    assert content_fingerprint(event.with_changes(**changes)) != content_fingerprint(event)


def test_fingerprint_differs_across_types_and_quantities() -> None:
    fingerprints = {content_fingerprint(e) for e in examples()}
    assert len(fingerprints) == len(examples())
    order = examples()[1]
    assert content_fingerprint(order.with_changes(quantity=11.0)) != content_fingerprint(order)


def test_wrong_type_and_invalid_items_in_one_envelope() -> None:
    tick, order = ticks(1)[0], examples()[1]
    broken = market_json(price=-1)
    data = b"[" + b",".join([encode_event(order), broken, encode_event(tick)]) + b"]"
    result = decode_message(data, EventType.MARKET_DATA)
    assert result.events == [tick]
    assert [(r.payload, r.reason) for r in result.rejects] == [
        (encode_event(order), "event_type 'order' does not belong here: "
                              "expected 'market_data' events only"),
        (broken, "Price must be positive"),
    ]  # fmt: skip
