"""The platform's event contract, tested the way the platform's own unit tests would.

Constructors with keywords, the contract's defaults, every validation message
word for word (missing required values included: a ``ValueError``, never a
``TypeError``), ``to_dict``/``from_dict``, and JSON in the contract's shape as
an external producer (a librdkafka client, ``redis-cli XADD``) sends it,
decoded by ``events.decode_message``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from silvertine_streams import events
from silvertine_streams.events import (
    Event,
    EventType,
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    OrderStatus,
    OrderType,
    SignalEvent,
    SignalType,
)
from tests.contract import COMMON_FIELDS, FIELDS_OF_TYPE

CONTRACT_FIELDS: dict[type[Event], set[str]] = {
    MarketDataEvent: FIELDS_OF_TYPE["market_data"],
    OrderEvent: FIELDS_OF_TYPE["order"],
    FillEvent: FIELDS_OF_TYPE["fill"],
    SignalEvent: FIELDS_OF_TYPE["signal"],
}


def raises_exactly(message: str, build: Callable[[], object]) -> None:
    """Assert ``build()`` raises a plain ``ValueError`` whose message is ``message``."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$") as info:
        build()
    assert type(info.value) is ValueError


# --- every event ----------------------------------------------------------------------


class TestEveryEvent:
    @pytest.mark.parametrize(
        "build",
        [
            lambda: MarketDataEvent(symbol="AAPL", price=150.0),
            lambda: OrderEvent(order_id="o-1", symbol="AAPL", quantity=10.0),
            lambda: FillEvent(order_id="o-1", symbol="AAPL", executed_quantity=10.0,
                              executed_price=150.0),
            lambda: SignalEvent(symbol="AAPL", strategy_id="s-1"),
        ],
        ids=["market_data", "order", "fill", "signal"],
    )
    def test_common_defaults(self, build: Callable[[], Event]) -> None:
        before = datetime.now(UTC)
        event = build()
        assert uuid.UUID(event.event_id).version == 4
        assert event.timestamp.tzinfo is not None
        assert event.timestamp.utcoffset() == timedelta(0)
        assert before <= event.timestamp <= datetime.now(UTC)
        assert event.source == ""
        assert event.metadata == {}

    def test_event_ids_are_unique_and_metadata_not_shared(self) -> None:
        first = MarketDataEvent(symbol="AAPL", price=1.0)
        second = MarketDataEvent(symbol="AAPL", price=1.0)
        assert first.event_id != second.event_id
        assert first.metadata is not second.metadata

    def test_event_types(self) -> None:
        assert MarketDataEvent(symbol="A", price=1.0).event_type == EventType.MARKET_DATA
        assert OrderEvent(order_id="o", symbol="A", quantity=1.0).event_type == EventType.ORDER
        assert FillEvent(order_id="o", symbol="A", executed_quantity=1.0,
                         executed_price=1.0).event_type == EventType.FILL
        assert SignalEvent(symbol="A", strategy_id="s").event_type == EventType.SIGNAL
        assert [t.value for t in EventType][:4] == ["market_data", "order", "fill", "signal"]


# --- market data --------------------------------------------------------------------


class TestMarketDataEvent:
    def test_create(self) -> None:
        event = MarketDataEvent(symbol="AAPL", price=150.25, volume=1000.0, bid=150.2,
                                ask=150.3, bid_size=500.0, ask_size=700.0, source="feed-1",
                                metadata={"venue": "XNAS"})
        assert (event.symbol, event.price, event.volume) == ("AAPL", 150.25, 1000.0)
        assert (event.bid, event.ask, event.bid_size, event.ask_size) == (150.2, 150.3, 500.0,
                                                                          700.0)
        assert event.source == "feed-1" and event.metadata == {"venue": "XNAS"}

    def test_defaults(self) -> None:
        event = MarketDataEvent(symbol="AAPL", price=150.0)
        assert event.volume == 0
        assert (event.bid, event.ask, event.bid_size, event.ask_size) == (None, None, None, None)

    def test_empty_symbol(self) -> None:
        raises_exactly("Symbol cannot be empty", lambda: MarketDataEvent(symbol="", price=1.0))

    def test_missing_symbol(self) -> None:
        raises_exactly("Symbol cannot be empty", lambda: MarketDataEvent(price=1.0))

    @pytest.mark.parametrize("price", [0.0, -1.0, -0.01])
    def test_price_must_be_positive(self, price: float) -> None:
        raises_exactly("Price must be positive", lambda: MarketDataEvent(symbol="A", price=price))

    def test_missing_price(self) -> None:
        raises_exactly("Price must be positive", lambda: MarketDataEvent(symbol="A"))

    def test_negative_volume(self) -> None:
        raises_exactly("Volume cannot be negative",
                       lambda: MarketDataEvent(symbol="A", price=1.0, volume=-1.0))

    def test_bid_cannot_exceed_ask(self) -> None:
        raises_exactly("Bid cannot exceed ask",
                       lambda: MarketDataEvent(symbol="A", price=1.0, bid=1.1, ask=1.0))

    def test_bid_equal_to_ask_is_valid(self) -> None:
        assert MarketDataEvent(symbol="A", price=1.0, bid=1.0, ask=1.0).bid == 1.0


# --- orders -----------------------------------------------------------------------------


class TestOrderEvent:
    def test_create(self) -> None:
        event = OrderEvent(order_id="o-1", symbol="AAPL", side=OrderSide.SELL,
                           order_type=OrderType.STOP_LIMIT, quantity=5.0, price=149.0,
                           stop_price=150.0, status=OrderStatus.SUBMITTED, strategy_id="mom")
        assert (event.order_id, event.symbol, event.side) == ("o-1", "AAPL", OrderSide.SELL)
        assert (event.order_type, event.quantity, event.price, event.stop_price) == (
            OrderType.STOP_LIMIT, 5.0, 149.0, 150.0)
        assert (event.status, event.strategy_id) == (OrderStatus.SUBMITTED, "mom")

    def test_defaults(self) -> None:
        event = OrderEvent(order_id="o-1", symbol="AAPL", quantity=1.0)
        assert event.side == OrderSide.BUY
        assert event.order_type == OrderType.MARKET
        assert event.status == OrderStatus.PENDING
        assert (event.price, event.stop_price, event.strategy_id) == (None, None, "")

    def test_vocabularies(self) -> None:
        assert [s.value for s in OrderSide] == ["buy", "sell"]
        assert [t.value for t in OrderType] == ["market", "limit", "stop", "stop_limit"]
        assert [s.value for s in OrderStatus] == [
            "pending", "submitted", "partially_filled", "filled", "cancelled", "rejected"]

    def test_empty_order_id(self) -> None:
        raises_exactly("Order ID cannot be empty",
                       lambda: OrderEvent(order_id="", symbol="X", quantity=1.0))

    def test_missing_order_id(self) -> None:
        raises_exactly("Order ID cannot be empty", lambda: OrderEvent(symbol="X", quantity=1.0))

    def test_missing_symbol(self) -> None:
        raises_exactly("Symbol cannot be empty", lambda: OrderEvent(order_id="o", quantity=1.0))

    @pytest.mark.parametrize("quantity", [0.0, -5.0])
    def test_quantity_must_be_positive(self, quantity: float) -> None:
        raises_exactly("Quantity must be positive",
                       lambda: OrderEvent(order_id="o", symbol="X", quantity=quantity))

    def test_missing_quantity(self) -> None:
        raises_exactly("Quantity must be positive", lambda: OrderEvent(order_id="o", symbol="X"))

    @pytest.mark.parametrize("order_type", [OrderType.LIMIT, OrderType.STOP_LIMIT])
    def test_priced_orders_require_price(self, order_type: OrderType) -> None:
        raises_exactly(f"{order_type.value} orders require price", lambda: OrderEvent(
            order_id="o", symbol="X", quantity=1.0, order_type=order_type, stop_price=1.0))

    @pytest.mark.parametrize("order_type", [OrderType.STOP, OrderType.STOP_LIMIT])
    def test_stop_orders_require_stop_price(self, order_type: OrderType) -> None:
        raises_exactly(f"{order_type.value} orders require stop price", lambda: OrderEvent(
            order_id="o", symbol="X", quantity=1.0, order_type=order_type, price=1.0))

    def test_message_names_limit_and_stop_word_for_word(self) -> None:
        raises_exactly("limit orders require price", lambda: OrderEvent(
            order_id="o", symbol="X", quantity=1.0, order_type=OrderType.LIMIT))
        raises_exactly("stop orders require stop price", lambda: OrderEvent(
            order_id="o", symbol="X", quantity=1.0, order_type=OrderType.STOP))

    def test_enum_values_as_strings(self) -> None:
        event = OrderEvent(order_id="o", symbol="X", quantity=1.0, side="sell",  # type: ignore[arg-type]  # the contract accepts values
                           order_type="limit", price=2.0, status="cancelled")  # type: ignore[arg-type]  # the contract accepts values
        assert event.side is OrderSide.SELL and event.order_type is OrderType.LIMIT
        assert event.status is OrderStatus.CANCELLED


# --- fills ----------------------------------------------------------------------------------


class TestFillEvent:
    def test_create(self) -> None:
        event = FillEvent(order_id="o-1", symbol="AAPL", executed_quantity=10.0,
                          executed_price=150.5, commission=0.75, commission_asset="USD",
                          exchange="XNAS", trade_id="T-42")
        assert (event.order_id, event.symbol) == ("o-1", "AAPL")
        assert (event.executed_quantity, event.executed_price) == (10.0, 150.5)
        assert (event.commission, event.commission_asset, event.exchange, event.trade_id) == (
            0.75, "USD", "XNAS", "T-42")

    def test_defaults(self) -> None:
        event = FillEvent(order_id="o-1", symbol="AAPL", executed_quantity=1.0,
                          executed_price=1.0)
        assert event.commission == 0
        assert (event.commission_asset, event.exchange, event.trade_id) == ("", "", "")

    @pytest.mark.parametrize("quantity", [0.0, -1.0])
    def test_executed_quantity_must_be_positive(self, quantity: float) -> None:
        raises_exactly("Executed quantity must be positive", lambda: FillEvent(
            order_id="o", symbol="X", executed_quantity=quantity, executed_price=1.0))

    @pytest.mark.parametrize("price", [0.0, -1.0])
    def test_executed_price_must_be_positive(self, price: float) -> None:
        raises_exactly("Executed price must be positive", lambda: FillEvent(
            order_id="o", symbol="X", executed_quantity=1.0, executed_price=price))

    def test_commission_cannot_be_negative(self) -> None:
        raises_exactly("Commission cannot be negative", lambda: FillEvent(
            order_id="o", symbol="X", executed_quantity=1.0, executed_price=1.0,
            commission=-0.01))

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"symbol": "X", "executed_quantity": 1.0, "executed_price": 1.0},
             "Order ID cannot be empty"),
            ({"order_id": "o", "executed_quantity": 1.0, "executed_price": 1.0},
             "Symbol cannot be empty"),
            ({"order_id": "o", "symbol": "X", "executed_price": 1.0},
             "Executed quantity must be positive"),
            ({"order_id": "o", "symbol": "X", "executed_quantity": 1.0},
             "Executed price must be positive"),
        ],
    )  # fmt: skip
    def test_missing_required_values(self, fields: dict[str, Any], message: str) -> None:
        raises_exactly(message, lambda: FillEvent(**fields))


# --- signals ---------------------------------------------------------------------------


class TestSignalEvent:
    def test_create(self) -> None:
        event = SignalEvent(symbol="AAPL", signal_type=SignalType.LONG, strength=0.8,
                            strategy_id="mom", reason="breakout", target_price=160.0,
                            stop_loss=145.0, take_profit=170.0)
        assert (event.symbol, event.signal_type, event.strength) == ("AAPL", SignalType.LONG,
                                                                     0.8)
        assert (event.strategy_id, event.reason) == ("mom", "breakout")
        assert (event.target_price, event.stop_loss, event.take_profit) == (160.0, 145.0, 170.0)

    def test_defaults(self) -> None:
        event = SignalEvent(symbol="AAPL", strategy_id="mom")
        assert event.signal_type == SignalType.NEUTRAL
        assert event.strength == 0.0 and event.reason == ""
        assert (event.target_price, event.stop_loss, event.take_profit) == (None, None, None)

    def test_signal_types(self) -> None:
        assert [t.value for t in SignalType] == ["long", "short", "exit", "neutral"]
        assert SignalEvent(symbol="A", strategy_id="s", signal_type="long").signal_type is (  # type: ignore[arg-type]  # the contract accepts values
            SignalType.LONG)

    @pytest.mark.parametrize("strength", [1.5, -1.5, 1.0000001])
    def test_strength_out_of_range(self, strength: float) -> None:
        raises_exactly("Signal strength must be between -1.0 and 1.0",
                       lambda: SignalEvent(symbol="X", strategy_id="s", strength=strength))

    @pytest.mark.parametrize("strength", [-1.0, 0.0, 1.0])
    def test_strength_bounds_are_valid(self, strength: float) -> None:
        assert SignalEvent(symbol="X", strategy_id="s", strength=strength).strength == strength

    def test_empty_strategy_id(self) -> None:
        raises_exactly("Strategy ID cannot be empty",
                       lambda: SignalEvent(symbol="X", strategy_id=""))

    def test_missing_strategy_id(self) -> None:
        raises_exactly("Strategy ID cannot be empty", lambda: SignalEvent(symbol="X"))

    def test_missing_symbol(self) -> None:
        raises_exactly("Symbol cannot be empty", lambda: SignalEvent(strategy_id="s"))


# --- to_dict / from_dict ----------------------------------------------------------------


def every_type() -> list[Event]:
    return [
        MarketDataEvent(symbol="AAPL", price=150.0, volume=10.0, bid=149.9, ask=150.1),
        OrderEvent(order_id="o-1", symbol="AAPL", side=OrderSide.SELL,
                   order_type=OrderType.LIMIT, quantity=3.0, price=151.0, strategy_id="mom"),
        FillEvent(order_id="o-1", symbol="AAPL", executed_quantity=3.0, executed_price=151.0,
                  commission=0.3, commission_asset="USD", exchange="XNAS", trade_id="T-1"),
        SignalEvent(symbol="AAPL", signal_type=SignalType.SHORT, strength=-0.4,
                    strategy_id="mom", reason="cross", stop_loss=155.0),
    ]  # fmt: skip


class TestSerialization:
    @pytest.mark.parametrize("event", every_type(), ids=lambda e: e.event_type.value)
    def test_to_dict_writes_every_contract_field(self, event: Event) -> None:
        data = event.to_dict()
        assert COMMON_FIELDS | CONTRACT_FIELDS[type(event)] <= set(data)
        assert data["event_type"] == event.event_type.value
        assert datetime.fromisoformat(data["timestamp"]) == event.timestamp
        assert json.loads(json.dumps(data)) == data  # JSON-ready as it is

    def test_to_dict_writes_none_fields(self) -> None:
        data = MarketDataEvent(symbol="AAPL", price=1.0).to_dict()
        assert {k: data[k] for k in ("bid", "ask", "bid_size", "ask_size")} == dict.fromkeys(
            ("bid", "ask", "bid_size", "ask_size"))

    @pytest.mark.parametrize("event", every_type(), ids=lambda e: e.event_type.value)
    def test_round_trip(self, event: Event) -> None:
        assert Event.from_dict(event.to_dict()) == event
        assert type(event).from_dict(event.to_dict()) == event

    def test_from_dict_takes_the_contracts_own_form(self) -> None:
        stamp = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
        data = {"event_id": "e-1", "timestamp": stamp.isoformat(), "event_type": "signal",
                "source": "strat", "metadata": {}, "symbol": "AAPL", "signal_type": "exit",
                "strength": 0, "strategy_id": "mom", "reason": "", "target_price": None,
                "stop_loss": None, "take_profit": None}
        event = Event.from_dict(data)
        assert isinstance(event, SignalEvent)
        assert (event.timestamp, event.signal_type, event.strength) == (stamp, SignalType.EXIT,
                                                                         0.0)

    def test_from_dict_keeps_the_constructors_defaults(self) -> None:
        event = Event.from_dict({"event_type": "order", "order_id": "o", "symbol": "X",
                                 "quantity": 1})
        assert isinstance(event, OrderEvent) and event.side is OrderSide.BUY

    def test_from_dict_reports_rules_as_value_errors(self) -> None:
        raises_exactly("Order ID cannot be empty", lambda: Event.from_dict(
            {"event_type": "order", "symbol": "X", "quantity": 1}))


# --- the wire ----------------------------------------------------------------------------------


def contract_json(event_type: str, **fields: Any) -> bytes:
    """One event as a contract producer writes it: every common field, then ``fields``."""
    body = {"event_id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "event_type": event_type, "source": "ext-producer", "metadata": {}, **fields}
    return json.dumps(body).encode()


WIRE_MARKET = contract_json("market_data", symbol="AAPL", price=150.25, volume=1200,
                            bid=150.2, ask=150.3, bid_size=None, ask_size=None)
WIRE_ORDER = contract_json("order", order_id="o-77", symbol="AAPL", side="sell",
                           order_type="limit", quantity=25, price=151.0, stop_price=None,
                           status="pending", strategy_id="")
WIRE_FILL = contract_json("fill", order_id="o-77", symbol="AAPL", executed_quantity=25,
                          executed_price=151.0, commission=0.25, commission_asset="USD",
                          exchange="XNAS", trade_id="T-9001")
WIRE_SIGNAL = contract_json("signal", symbol="AAPL", signal_type="long", strength=0.7,
                            strategy_id="breakout", reason="new high", target_price=160.0,
                            stop_loss=145.0, take_profit=170.0)


class TestWire:
    def test_market_data(self) -> None:
        [event] = self.decoded(WIRE_MARKET, EventType.MARKET_DATA)
        assert isinstance(event, MarketDataEvent)
        assert (event.symbol, event.price, event.volume, event.bid, event.ask) == (
            "AAPL", 150.25, 1200.0, 150.2, 150.3)
        assert event.source == "ext-producer"

    def test_order(self) -> None:
        [event] = self.decoded(WIRE_ORDER, EventType.ORDER)
        assert isinstance(event, OrderEvent)
        assert (event.order_id, event.side, event.order_type, event.quantity, event.price) == (
            "o-77", OrderSide.SELL, OrderType.LIMIT, 25.0, 151.0)
        assert (event.status, event.strategy_id) == (OrderStatus.PENDING, "")

    def test_fill_without_a_side(self) -> None:
        [event] = self.decoded(WIRE_FILL, EventType.FILL)
        assert isinstance(event, FillEvent)
        assert (event.executed_quantity, event.executed_price, event.commission) == (
            25.0, 151.0, 0.25)
        assert (event.commission_asset, event.exchange, event.trade_id) == ("USD", "XNAS",
                                                                            "T-9001")
        assert event.side is None

    def test_signal(self) -> None:
        [event] = self.decoded(WIRE_SIGNAL, EventType.SIGNAL)
        assert isinstance(event, SignalEvent)
        assert (event.signal_type, event.strength, event.reason) == (SignalType.LONG, 0.7,
                                                                     "new high")
        assert (event.target_price, event.stop_loss, event.take_profit) == (160.0, 145.0, 170.0)

    def test_minimal_events_take_the_contract_defaults(self) -> None:
        [signal] = self.decoded(contract_json("signal", symbol="A", strategy_id="s"))
        assert isinstance(signal, SignalEvent)
        assert (signal.signal_type, signal.strength) == (SignalType.NEUTRAL, 0.0)
        [fill] = self.decoded(contract_json("fill", order_id="o", symbol="A",
                                            executed_quantity=1, executed_price=2))
        assert isinstance(fill, FillEvent) and (fill.commission, fill.trade_id) == (0.0, "")

    def test_what_the_engine_writes_uses_the_contracts_names(self) -> None:
        for event in every_type():
            written = json.loads(events.encode_event(event))
            assert COMMON_FIELDS | CONTRACT_FIELDS[type(event)] <= set(written)
        assert "executed_qty" not in json.loads(events.encode_event(every_type()[2]))

    def test_an_order_without_side_is_a_dead_letter(self) -> None:
        body = json.loads(WIRE_ORDER)
        del body["side"]
        payload = json.dumps(body).encode()
        result = events.decode_message(payload, EventType.ORDER)
        assert result.events == []
        [reject] = result.rejects
        assert reject.payload == payload
        assert reject.reason == "Object missing required field `side`"

    def test_an_order_without_side_in_an_envelope_loses_only_itself(self) -> None:
        body = json.loads(WIRE_ORDER)
        del body["side"]
        envelope = b"[" + WIRE_ORDER + b"," + json.dumps(body).encode() + b"]"
        result = events.decode_message(envelope, EventType.ORDER)
        [order] = result.events
        assert isinstance(order, OrderEvent) and order.side is OrderSide.SELL
        assert [r.reason for r in result.rejects] == ["Object missing required field `side`"]
        assert result.rejects[0].payload == json.dumps(body).encode()

    @pytest.mark.parametrize(
        ("payload", "message"),
        [
            (contract_json("market_data", price=1.0), "Symbol cannot be empty"),
            (contract_json("market_data", symbol="A", price=0), "Price must be positive"),
            (contract_json("market_data", symbol="A", price=1, volume=-1),
             "Volume cannot be negative"),
            (contract_json("market_data", symbol="A", price=1, bid=2, ask=1),
             "Bid cannot exceed ask"),
            (contract_json("order", symbol="A", side="buy", quantity=1),
             "Order ID cannot be empty"),
            (contract_json("order", order_id="o", symbol="A", side="buy"),
             "Quantity must be positive"),
            (contract_json("order", order_id="o", symbol="A", side="buy", quantity=1,
                           order_type="stop_limit", stop_price=1),
             "stop_limit orders require price"),
            (contract_json("order", order_id="o", symbol="A", side="buy", quantity=1,
                           order_type="stop"), "stop orders require stop price"),
            (contract_json("fill", order_id="o", symbol="A", executed_price=1),
             "Executed quantity must be positive"),
            (contract_json("fill", order_id="o", symbol="A", executed_quantity=1,
                           executed_price=-1), "Executed price must be positive"),
            (contract_json("fill", order_id="o", symbol="A", executed_quantity=1,
                           executed_price=1, commission=-1), "Commission cannot be negative"),
            (contract_json("signal", symbol="A"), "Strategy ID cannot be empty"),
            (contract_json("signal", symbol="A", strategy_id="s", strength=2),
             "Signal strength must be between -1.0 and 1.0"),
        ],
    )  # fmt: skip
    def test_broken_rules_are_dead_letters_with_the_contract_message(
        self, payload: bytes, message: str
    ) -> None:
        result = events.decode_message(payload)
        assert result.events == [] and [r.reason for r in result.rejects] == [message]

    def test_an_unknown_signal_type_names_the_valid_ones(self) -> None:
        payload = contract_json("signal", symbol="A", strategy_id="s", signal_type="buy")
        [reject] = events.decode_message(payload).rejects
        assert "valid values: long, short, exit, neutral" in reject.reason

    @staticmethod
    def decoded(payload: bytes, expected: EventType | None = None) -> list[Event]:
        result = events.decode_message(payload, expected)
        assert result.rejects == []
        return result.events
