"""Property tests: every valid event survives the wire and the dict form unchanged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from silvertine_streams.events import (
    Event,
    EventType,
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    OrderStatus,
    OrderType,
    Severity,
    SignalEvent,
    SignalType,
    SystemEvent,
    TimeInForce,
    content_fingerprint,
    decode_event,
    decode_message,
    encode_batch,
    encode_event,
)

# Printable, no whitespace at the edges: letters, digits, punctuation, symbols,
# with inner spaces allowed.
_edge = st.characters(categories=["L", "N", "P", "S"])
symbols = st.builds(
    # With an empty tail the middle's last space would end the symbol: strip it.
    lambda head, middle, tail: head + (middle + tail if tail else middle.rstrip()),
    _edge.map(str),
    st.text(st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="\u3000")
            .filter(str.isprintable), max_size=20),
    st.text(_edge, max_size=1),
).filter(lambda s: len(s) <= 64)  # fmt: skip
ids = st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=128)
optional_ids = st.just("") | ids
short_texts = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"]), max_size=64).filter(
    str.isprintable
)
finite = st.floats(allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)
non_negative = st.floats(min_value=0.0, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

common: dict[str, st.SearchStrategy[Any]] = {
    "event_id": ids,
    "timestamp": st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
    ).filter(lambda t: t <= datetime.now(UTC)),
    "source": optional_ids,
    "metadata": json_objects,
    "sequence": st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    "ts_ns": st.integers(min_value=1, max_value=2**63 - 1),
}


@st.composite
def market_data(draw: st.DrawFn) -> MarketDataEvent:
    bid, ask = sorted(draw(st.tuples(positive, positive)))
    quoted = draw(st.booleans())
    return draw(
        st.builds(
            MarketDataEvent,
            symbol=symbols,
            price=positive,
            volume=non_negative,
            bid=st.just(bid if quoted else None),
            ask=st.just(ask if quoted else None) | st.none(),
            bid_size=st.none() | non_negative,
            ask_size=st.none() | non_negative,
            **common,
        )
    )


@st.composite
def orders(draw: st.DrawFn) -> OrderEvent:
    order_type = draw(st.sampled_from(OrderType))
    needs_price = order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    return draw(
        st.builds(
            OrderEvent,
            order_id=ids,
            symbol=symbols,
            side=st.sampled_from(OrderSide),
            quantity=positive,
            order_type=st.just(order_type),
            price=positive if needs_price else st.none() | positive,
            stop_price=positive if needs_stop else st.none() | positive,
            status=st.sampled_from(OrderStatus),
            strategy_id=optional_ids,
            time_in_force=st.sampled_from(TimeInForce),
            **common,
        )
    )


fills = st.builds(
    FillEvent,
    order_id=ids,
    symbol=symbols,
    executed_quantity=positive,
    executed_price=positive,
    commission=non_negative,
    commission_asset=short_texts,
    exchange=short_texts,
    trade_id=optional_ids,
    fill_id=optional_ids,
    side=st.none() | st.sampled_from(OrderSide),
    **common,
)
signals = st.builds(
    SignalEvent,
    symbol=symbols,
    signal_type=st.sampled_from(SignalType),
    strength=st.floats(min_value=-1.0, max_value=1.0),
    strategy_id=ids,
    reason=st.text(max_size=40),
    target_price=st.none() | positive,
    stop_loss=st.none() | positive,
    take_profit=st.none() | positive,
    **common,
)
systems = st.builds(
    SystemEvent,
    kind=st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=64),
    severity=st.sampled_from(Severity),
    message=st.text(max_size=40),
    details=json_objects,
    symbol=st.just("") | symbols,
    **common,
)
events = st.one_of(market_data(), orders(), fills, signals, systems)


@given(events)
def test_wire_round_trip(event: Event) -> None:
    data = encode_event(event)
    decoded = decode_event(data)
    assert decoded == event
    assert type(decoded) is type(event)
    assert encode_event(decoded) == data
    assert decode_message(data, event.event_type).events == [event]
    assert content_fingerprint(decoded) == content_fingerprint(event)


@given(events)
def test_dict_round_trip(event: Event) -> None:
    # Every field is written, None ones included: a log entry shows the whole contract.
    assert set(event.to_dict()) == {"event_type", *type(event).__struct_fields__}
    assert Event.from_dict(event.to_dict()) == event
    assert type(event).from_dict(event.to_dict()) == event


@given(events)
def test_fingerprint_ignores_ingress_fields(event: Event) -> None:
    refilled = event.with_changes(sequence=None, ts_ns=event.ts_ns % (2**62) + 1)
    assert content_fingerprint(refilled) == content_fingerprint(event)


@settings(max_examples=50)
@given(st.lists(events, max_size=20))
def test_envelope_round_trip(batch: list[Event]) -> None:
    result = decode_message(encode_batch(batch))
    assert result.rejects == []
    assert result.events == batch


@settings(max_examples=50)
@given(st.lists(market_data(), max_size=10), st.lists(orders(), min_size=1, max_size=3))
def test_expected_type_keeps_exactly_the_matching_events(
    ticks: list[MarketDataEvent], strays: list[OrderEvent]
) -> None:
    batch: list[Event] = [*ticks, *strays]
    result = decode_message(encode_batch(batch), EventType.MARKET_DATA)
    assert result.events == ticks
    assert [r.payload for r in result.rejects] == [encode_event(e) for e in strays]
