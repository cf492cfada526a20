"""Unit tests for the event model: every validation rule, defaults, dict round trips."""

from __future__ import annotations

import enum
import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from silvertine_streams.events import (
    Event,
    EventPriority,
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
    validation,
)

T0 = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def market(**changes: Any) -> MarketDataEvent:
    fields: dict[str, Any] = {"symbol": "AAPL", "price": 100.0}
    return MarketDataEvent(**(fields | changes))


def order(**changes: Any) -> OrderEvent:
    fields: dict[str, Any] = {"order_id": "o-1", "symbol": "AAPL", "side": OrderSide.BUY}
    return OrderEvent(**(fields | {"quantity": 10.0} | changes))


def fill(**changes: Any) -> FillEvent:
    fields: dict[str, Any] = {"order_id": "o-1", "symbol": "AAPL", "side": OrderSide.SELL}
    return FillEvent(**(fields | {"executed_quantity": 5.0, "executed_price": 99.5} | changes))


def signal(**changes: Any) -> SignalEvent:
    fields: dict[str, Any] = {"symbol": "AAPL", "strategy_id": "mom-1"}
    return SignalEvent(**(fields | {"signal_type": SignalType.LONG, "strength": 0.5} | changes))


def system(**changes: Any) -> SystemEvent:
    return SystemEvent(**({"kind": "sequence_gap"} | changes))


BUILDERS = {"market": market, "order": order, "fill": fill, "signal": signal, "system": system}


def full_examples() -> list[Event]:
    """One event of each type with every optional field set."""
    common: dict[str, Any] = {
        "event_id": "evt-1",
        "timestamp": T0,
        "source": "feed-a",
        "metadata": {"venue": "XNAS", "depth": [1, 2.5, None, True], "nested": {"k": "v"}},
        "sequence": 42,
        "ts_ns": 1_709_296_215_123_456_789,
    }
    return [
        MarketDataEvent(
            symbol="AAPL", price=100.25, volume=300.0, bid=100.2, ask=100.3,
            bid_size=5.0, ask_size=7.0, **common,
        ),
        OrderEvent(
            order_id="o-1", symbol="AAPL", side=OrderSide.SELL, quantity=3.0,
            order_type=OrderType.STOP_LIMIT, price=99.0, stop_price=99.5,
            status=OrderStatus.SUBMITTED, strategy_id="mom-1", time_in_force=TimeInForce.IOC,
            **common,
        ),
        FillEvent(
            order_id="o-1", symbol="AAPL", executed_quantity=1.5, executed_price=99.75,
            commission=0.01, commission_asset="USD", exchange="XNAS", trade_id="t-9",
            fill_id="f-1", side=OrderSide.BUY, **common,
        ),
        SignalEvent(
            symbol="AAPL", signal_type=SignalType.EXIT, strength=-1.0, strategy_id="mom-1",
            reason="stop hit", target_price=120.0, stop_loss=95.0, take_profit=130.0, **common,
        ),
        SystemEvent(
            kind="clock_drift", severity=Severity.CRITICAL, message="drift 250 ms",
            details={"drift_ms": 250.0}, symbol="AAPL", **common,
        ),
    ]  # fmt: skip


def expect_error(build: Any, expected: str, /, **changes: Any) -> None:
    with pytest.raises(ValueError) as info:
        build(**changes)
    assert type(info.value) is ValueError  # constructor errors are plain ValueError
    assert str(info.value) == expected


# --- enums and class-level facts --------------------------------------------


def test_enum_values_are_the_wire_values() -> None:
    assert [e.value for e in EventType] == ["market_data", "order", "fill", "signal", "system"]
    assert [e.value for e in OrderSide] == ["buy", "sell"]
    assert [e.value for e in OrderType] == ["market", "limit", "stop", "stop_limit"]
    assert [e.value for e in OrderStatus] == [
        "pending", "submitted", "partially_filled", "filled", "cancelled", "rejected",
    ]  # fmt: skip
    assert [e.value for e in SignalType] == ["long", "short", "exit", "neutral"]
    assert [e.value for e in TimeInForce] == ["day", "gtc", "ioc", "fok"]
    assert [e.value for e in Severity] == ["info", "warning", "error", "critical"]
    assert all(isinstance(e, str) for e in EventType)
    assert [(p.name, int(p)) for p in EventPriority] == [
        ("CRITICAL", 0), ("HIGH", 1), ("NORMAL", 2), ("LOW", 3),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("event", "event_type", "priority"),
    [
        (market(), EventType.MARKET_DATA, EventPriority.NORMAL),
        (order(), EventType.ORDER, EventPriority.CRITICAL),
        (fill(), EventType.FILL, EventPriority.CRITICAL),
        (signal(), EventType.SIGNAL, EventPriority.HIGH),
        (system(), EventType.SYSTEM, EventPriority.HIGH),
    ],
)
def test_event_type_and_priority(
    event: Event, event_type: EventType, priority: EventPriority
) -> None:
    assert event.event_type is event_type
    assert event.priority is priority
    assert event.to_dict()["event_type"] == event_type.value


def test_partition_key_is_the_symbol_or_the_system_kind() -> None:
    assert market(symbol="MSFT").partition_key == "MSFT"
    assert order(symbol="MSFT").partition_key == "MSFT"
    assert fill(symbol="MSFT").partition_key == "MSFT"
    assert signal(symbol="MSFT").partition_key == "MSFT"
    assert system(kind="circuit_open").partition_key == "circuit_open"
    assert system(kind="sequence_gap", symbol="MSFT").partition_key == "MSFT"


def test_base_event_cannot_be_constructed() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Event()


def test_defaults() -> None:
    before = datetime.now(UTC)
    first, second = market(), market()
    assert uuid.UUID(first.event_id).version == 4
    assert first.event_id != second.event_id
    assert first.timestamp.utcoffset() == timedelta(0)
    assert before <= first.timestamp <= datetime.now(UTC)
    assert first.source == ""
    assert first.metadata == {} and first.metadata is not second.metadata
    assert first.sequence is None
    assert abs(first.ts_ns - before.timestamp() * 1e9) < 60e9
    assert (first.volume, first.bid, first.ask, first.bid_size, first.ask_size) == (
        0.0, None, None, None, None,
    )  # fmt: skip
    o = order()
    assert (o.order_type, o.status, o.time_in_force) == (
        OrderType.MARKET, OrderStatus.PENDING, TimeInForce.DAY,
    )  # fmt: skip
    assert o.price is None and o.stop_price is None and o.strategy_id == ""
    assert o.side is OrderSide.BUY
    f = FillEvent(order_id="o-1", symbol="AAPL", executed_quantity=1.0, executed_price=2.0)
    assert (f.commission, f.commission_asset, f.exchange, f.trade_id) == (0.0, "", "", "")
    assert f.fill_id == "" and f.side is None
    sig = SignalEvent(symbol="AAPL", strategy_id="mom-1")
    assert (sig.signal_type, sig.strength, sig.reason) == (SignalType.NEUTRAL, 0.0, "")
    assert sig.target_price is None and sig.stop_loss is None and sig.take_profit is None
    s = system()
    assert (s.severity, s.message, s.details, s.symbol) == (Severity.INFO, "", {}, "")


def test_events_are_frozen() -> None:
    event = market()
    with pytest.raises(AttributeError):
        event.price = 1.0  # type: ignore[misc]  # the point of the test


# --- seed messages, word for word ------------------------------------------


@pytest.mark.parametrize(
    ("build", "changes", "message"),
    [
        (market, {"symbol": ""}, "Symbol cannot be empty"),
        (market, {"price": 0.0}, "Price must be positive"),
        (market, {"price": -1.0}, "Price must be positive"),
        (market, {"volume": -0.5}, "Volume cannot be negative"),
        (market, {"bid": 101.0, "ask": 100.0}, "Bid cannot exceed ask"),
        (order, {"order_id": ""}, "Order ID cannot be empty"),
        (order, {"symbol": ""}, "Symbol cannot be empty"),
        (order, {"quantity": 0.0}, "Quantity must be positive"),
        (order, {"quantity": -3.0}, "Quantity must be positive"),
        (order, {"order_type": OrderType.LIMIT}, "limit orders require price"),
        (order, {"order_type": OrderType.STOP_LIMIT, "stop_price": 9.0},
         "stop_limit orders require price"),
        (order, {"order_type": OrderType.STOP}, "stop orders require stop price"),
        (order, {"order_type": OrderType.STOP_LIMIT, "price": 9.0},
         "stop_limit orders require stop price"),
        (fill, {"order_id": ""}, "Order ID cannot be empty"),
        (fill, {"symbol": ""}, "Symbol cannot be empty"),
        (fill, {"executed_quantity": 0.0}, "Executed quantity must be positive"),
        (fill, {"executed_price": -2.0}, "Executed price must be positive"),
        (fill, {"commission": -0.01}, "Commission cannot be negative"),
        (signal, {"symbol": ""}, "Symbol cannot be empty"),
        (signal, {"strategy_id": ""}, "Strategy ID cannot be empty"),
        (signal, {"strength": 1.01}, "Signal strength must be between -1.0 and 1.0"),
        (signal, {"strength": -1.5}, "Signal strength must be between -1.0 and 1.0"),
    ],
)  # fmt: skip
def test_seed_messages(build: Any, changes: dict[str, Any], message: str) -> None:
    expect_error(build, message, **changes)


def test_seed_message_example_from_the_brief() -> None:
    with pytest.raises(ValueError, match="^Symbol cannot be empty$"):
        MarketDataEvent(symbol="", price=100.0)


def test_boundaries_that_are_valid() -> None:
    market(bid=100.0, ask=100.0, volume=0.0, bid_size=0.0, ask_size=0.0)
    signal(strength=-1.0)
    signal(strength=1.0)
    signal(strength=0.0, signal_type=SignalType.NEUTRAL)
    fill(commission=0.0)
    order(order_type=OrderType.LIMIT, price=1.0)
    order(order_type=OrderType.STOP, stop_price=1.0)
    order(order_type=OrderType.STOP_LIMIT, price=1.0, stop_price=1.5)
    order(price=5.0)  # a market order may carry a reference price
    market(symbol="X" * 64)
    market(symbol="BRK B")  # inner spaces are legitimate
    market(event_id="e" * 128)
    system(kind="k" * 64)


# --- extra rules --------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "changes", "message"),
    [
        (market, {"bid": 0.0}, "Bid must be positive"),
        (market, {"ask": -1.0}, "Ask must be positive"),
        (market, {"bid_size": -1.0}, "Bid size cannot be negative"),
        (market, {"ask_size": -1.0}, "Ask size cannot be negative"),
        (order, {"price": -1.0}, "Price must be positive"),
        (order, {"stop_price": 0.0}, "Stop price must be positive"),
        (order, {"strategy_id": "s\n"},
         "Strategy ID contains control or non-printable characters: 's\\n'"),
        (fill, {"fill_id": "f\t1"},
         "Fill ID contains control or non-printable characters: 'f\\t1'"),
        (fill, {"trade_id": "t" * 129}, "Trade ID is too long: 129 characters, at most 128"),
        (fill, {"exchange": 5}, "Exchange must be a string, got int"),
        (fill, {"commission_asset": "U\x00SD"},
         "Commission asset contains control or non-printable characters: 'U\\x00SD'"),
        (fill, {"side": "long"}, "side must be one of buy, sell, got 'long'"),
        (signal, {"target_price": 0.0}, "Target price must be positive"),
        (signal, {"stop_loss": -1.0}, "Stop loss must be positive"),
        (signal, {"take_profit": 0.0}, "Take profit must be positive"),
        (signal, {"reason": None}, "reason must be a string, got NoneType"),
        (system, {"kind": ""}, "Kind cannot be empty"),
        (system, {"kind": "k" * 65}, "Kind is too long: 65 characters, at most 64"),
        (system, {"message": 5}, "message must be a string, got int"),
        (market, {"source": "feed\r"},
         "Source contains control or non-printable characters: 'feed\\r'"),
        (market, {"event_id": ""}, "Event ID cannot be empty"),
        (market, {"event_id": "e" * 129}, "Event ID is too long: 129 characters, at most 128"),
        (market, {"event_id": "a\nb"},
         "Event ID contains control or non-printable characters: 'a\\nb'"),
        (order, {"order_id": "o\x001"},
         "Order ID contains control or non-printable characters: 'o\\x001'"),
        (market, {"symbol": "   "}, "Symbol cannot be empty"),
        (market, {"symbol": "AAPL "}, "Symbol must not start or end with whitespace: 'AAPL '"),
        (market, {"symbol": " AAPL"}, "Symbol must not start or end with whitespace: ' AAPL'"),
        (market, {"symbol": "AA\tPL"},
         "Symbol contains control or non-printable characters: 'AA\\tPL'"),
        (market, {"symbol": "AA\x7fPL"},
         "Symbol contains control or non-printable characters: 'AA\\x7fPL'"),
        (market, {"symbol": "X" * 65}, "Symbol is too long: 65 characters, at most 64"),
        (market, {"symbol": None}, "Symbol must be a string, got NoneType"),
        (system, {"symbol": "A\x1bB"},
         "Symbol contains control or non-printable characters: 'A\\x1bB'"),
        (market, {"sequence": -1}, "sequence must be between 0 and 2**63-1, got -1"),
        (market, {"sequence": 2**63}, f"sequence must be between 0 and 2**63-1, got {2**63}"),
        (market, {"sequence": 1.0}, "sequence must be an integer, got float"),
        (market, {"sequence": True}, "sequence must be an integer, got bool"),
        (market, {"ts_ns": 0}, "ts_ns must be between 1 and 2**63-1, got 0"),
        (market, {"ts_ns": False}, "ts_ns must be an integer, got bool"),
        (order, {"side": "long"}, "side must be one of buy, sell, got 'long'"),
        (order, {"order_type": "iceberg"},
         "order_type must be one of market, limit, stop, stop_limit, got 'iceberg'"),
        (order, {"time_in_force": "gtd"},
         "time_in_force must be one of day, gtc, ioc, fok, got 'gtd'"),
        (signal, {"signal_type": "buy"},
         "signal_type must be one of long, short, exit, neutral, got 'buy'"),
        (system, {"severity": "fatal"},
         "severity must be one of info, warning, error, critical, got 'fatal'"),
    ],
)  # fmt: skip
def test_extra_rules(build: Any, changes: dict[str, Any], message: str) -> None:
    expect_error(build, message, **changes)


NUMBER_FIELDS = [
    (market, "price"), (market, "volume"), (market, "bid"), (market, "ask"),
    (market, "bid_size"), (market, "ask_size"), (order, "quantity"), (order, "price"),
    (order, "stop_price"), (fill, "executed_quantity"), (fill, "executed_price"),
    (fill, "commission"), (signal, "strength"), (signal, "target_price"),
    (signal, "stop_loss"), (signal, "take_profit"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "name"), NUMBER_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400])
def test_numbers_must_be_finite(build: Any, name: str, value: float) -> None:
    expect_error(build, f"{name} must be a finite number", **{name: value})


@pytest.mark.parametrize(("build", "name"), NUMBER_FIELDS)
@pytest.mark.parametrize("value", [True, False, "1.5", [1.0]])
def test_bools_and_other_types_are_never_numbers(build: Any, name: str, value: object) -> None:
    expect_error(build, f"{name} must be a number, got {type(value).__name__}", **{name: value})


@pytest.mark.parametrize(
    ("build", "name"),
    [(market, "price"), (market, "volume"), (order, "quantity"), (fill, "executed_quantity"),
     (fill, "executed_price"), (fill, "commission"), (signal, "strength")],
)  # fmt: skip
def test_required_numbers_cannot_be_none(build: Any, name: str) -> None:
    expect_error(build, f"{name} must be a number, got NoneType", **{name: None})


def test_ints_are_stored_as_floats() -> None:
    event = market(price=100, volume=3, bid=99, ask=101)
    assert (event.price, event.volume, event.bid, event.ask) == (100.0, 3.0, 99.0, 101.0)
    assert all(type(v) is float for v in (event.price, event.volume, event.bid, event.ask))


def test_enum_values_given_as_strings_become_members() -> None:
    event = order(side="sell", order_type="limit", price=1.0, status="filled",
                  time_in_force="gtc")  # fmt: skip
    assert event.side is OrderSide.SELL and event.order_type is OrderType.LIMIT
    assert event.status is OrderStatus.FILLED and event.time_in_force is TimeInForce.GTC
    assert signal(signal_type="short").signal_type is SignalType.SHORT
    assert system(severity="error").severity is Severity.ERROR


def test_naive_timestamp_is_rejected() -> None:
    expect_error(market, "Timestamp must be timezone-aware UTC", timestamp=datetime(2024, 1, 1))


def test_non_utc_offset_is_rejected() -> None:
    plus_two = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    expect_error(market, "Timestamp must be timezone-aware UTC", timestamp=plus_two)


def test_other_zero_offset_timezone_is_accepted() -> None:
    stamp = datetime(2024, 1, 1, tzinfo=timezone(timedelta(0), "GMT"))
    assert market(timestamp=stamp).timestamp == datetime(2024, 1, 1, tzinfo=UTC)


def test_timestamp_must_be_a_datetime() -> None:
    expect_error(market, "Timestamp must be a datetime, got str", timestamp="2024-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "stamp",
    [datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime.now(UTC) + timedelta(days=2)],
)
def test_implausible_timestamps_are_rejected(stamp: datetime) -> None:
    with pytest.raises(ValueError, match="is implausible") as info:
        market(timestamp=stamp)
    assert stamp.isoformat() in str(info.value)


def test_plausible_edges_are_accepted() -> None:
    market(timestamp=datetime(2000, 1, 1, tzinfo=UTC))
    market(timestamp=datetime.now(UTC) + timedelta(hours=23))


def test_stale_future_limit_is_refreshed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cached limit lags the clock; a timestamp past it must be re-checked, not refused.
    monkeypatch.setattr(validation.FutureLimit, "value", datetime(2020, 1, 1, tzinfo=UTC))
    market(timestamp=datetime.now(UTC) + timedelta(hours=12))
    assert validation.FutureLimit.value > datetime.now(UTC)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"x": math.nan}, "metadata.x must hold only finite numbers"),
        ({"a": [1, {"b": math.inf}]}, "metadata.a[1].b must hold only finite numbers"),
        ({1: "x"}, "metadata keys must be strings, got 1"),
        ({"t": (1, 2)}, "metadata.t holds a tuple, which has no JSON form"),
        ({"d": T0}, "metadata.d holds a datetime, which has no JSON form"),
        (None, "metadata must be a dict, got NoneType"),
    ],
)
def test_metadata_must_be_json_ready(metadata: object, message: str) -> None:
    expect_error(market, message, metadata=metadata)


def test_system_details_must_be_json_ready() -> None:
    expect_error(system, "details.x must hold only finite numbers", details={"x": -math.inf})


def test_validate_reruns_the_rules() -> None:
    event = market()
    event.validate()
    msgspec.structs.force_setattr(event, "price", -5.0)
    with pytest.raises(ValueError, match="^Price must be positive$"):
        event.validate()


# --- to_dict / from_dict / with_changes ---------------------------------------


@pytest.mark.parametrize("event", full_examples(), ids=lambda e: e.event_type.value)
def test_to_dict_is_json_ready(event: Event) -> None:
    data = event.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["event_type"] == event.event_type.value
    assert data["timestamp"] == "2024-03-01T12:30:15.123456Z"
    assert not any(isinstance(value, enum.Enum) for value in data.values())
    assert data["sequence"] == 42 and data["ts_ns"] == 1_709_296_215_123_456_789


@pytest.mark.parametrize("event", full_examples(), ids=lambda e: e.event_type.value)
def test_dict_round_trip(event: Event) -> None:
    assert Event.from_dict(event.to_dict()) == event
    assert type(event).from_dict(event.to_dict()) == event
    assert type(Event.from_dict(event.to_dict())) is type(event)


@pytest.mark.parametrize("build", BUILDERS.values(), ids=list(BUILDERS))
def test_dict_round_trip_with_defaults(build: Any) -> None:
    event = build()
    assert Event.from_dict(event.to_dict()) == event


def test_from_dict_accepts_enum_members_and_datetimes() -> None:
    data = order().to_dict() | {
        "event_type": EventType.ORDER,
        "side": OrderSide.SELL,
        "timestamp": T0,
    }
    event = Event.from_dict(data)
    assert isinstance(event, OrderEvent)
    assert event.side is OrderSide.SELL and event.timestamp == T0


def test_from_dict_on_a_subclass_needs_no_event_type() -> None:
    data = market().to_dict()
    del data["event_type"]
    assert MarketDataEvent.from_dict(data).symbol == "AAPL"


@pytest.mark.parametrize(
    ("target", "data", "match"),
    [
        (Event, {"event_type": "quote", "symbol": "X"}, "unknown event_type 'quote'; valid types"),
        (Event, {"symbol": "X", "price": 1.0}, "unknown event_type None"),
        (MarketDataEvent, {"event_type": "order", "symbol": "X"},
         "expected event_type 'market_data', got 'order'"),
        (Event, {"event_type": "market_data", "symbol": "X", "price": -1.0},
         "^Price must be positive$"),
        (Event, {"event_type": "market_data", "symbol": "X", "price": True},
         r"Expected `float`, got `bool` - at `\$.price`"),
        (Event, {"event_type": "market_data", "symbol": "X"}, "^Price must be positive$"),
        (Event, {"event_type": "order", "symbol": "X", "quantity": 1},
         "^Order ID cannot be empty$"),
        (Event, {"event_type": "market_data", "symbol": "X", "price": 1.0, "px": 1},
         "unknown field `px`"),
        (Event, {"event_type": "market_data", "symbol": "X", "price": 1.0,
                 "timestamp": "2024-01-01T00:00:00"}, "Timestamp must be timezone-aware UTC"),
        (Event, ["not", "a", "mapping"], "expected a mapping, got list"),
        (Event, {"event_type": ["order"]}, r"unknown event_type \['order'\]"),
    ],
)  # fmt: skip
def test_from_dict_errors(target: type[Event], data: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        target.from_dict(data)


def test_with_changes_returns_a_validated_copy() -> None:
    event = market(sequence=None)
    changed = event.with_changes(sequence=7, price=101)
    assert changed.sequence == 7 and changed.price == 101.0 and type(changed.price) is float
    assert event.sequence is None and event.price == 100.0
    assert changed.event_id == event.event_id
    with pytest.raises(ValueError, match="^Bid cannot exceed ask$"):
        event.with_changes(bid=2.0, ask=1.0)
    with pytest.raises(TypeError):
        event.with_changes(event_type="order")
