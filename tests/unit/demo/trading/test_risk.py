"""Unit tests for silvertine_streams.demo.trading.risk (pure, fake clock)."""

from __future__ import annotations

import pytest

from silvertine_streams.demo.trading.positions import Positions
from silvertine_streams.demo.trading.risk import RiskCheck, RiskLimits, TokenBucket
from silvertine_streams.events import (
    FillEvent,
    OrderEvent,
    OrderSide,
    OrderStatus,
    OrderType,
    Severity,
    SignalEvent,
    SignalType,
    SystemEvent,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _signal(kind: SignalType = SignalType.LONG, price: float | None = 100.0,
            symbol: str = "AAPL") -> SignalEvent:
    return SignalEvent(symbol=symbol, strategy_id="ma-cross", signal_type=kind,
                       strength=0.5 if kind is SignalType.LONG else -0.5, target_price=price)


def _fill(side: OrderSide, qty: float, price: float = 100.0, symbol: str = "AAPL") -> FillEvent:
    return FillEvent(order_id="x", symbol=symbol, side=side, executed_quantity=qty,
                     executed_price=price)


LOOSE = RiskLimits(max_position=1000, max_notional=1e9, max_orders_per_s=1e6, default_qty=100)


def test_long_signal_becomes_a_pending_limit_order_at_the_target() -> None:
    signal = _signal()
    order = RiskCheck(LOOSE, Positions(), now=Clock()).on_signal(signal)
    assert isinstance(order, OrderEvent)
    assert (order.side, order.quantity, order.order_type, order.price, order.status) == (
        OrderSide.BUY, 100.0, OrderType.LIMIT, 100.0, OrderStatus.PENDING)
    assert order.strategy_id == "ma-cross" and order.symbol == "AAPL"
    assert order.metadata == {"signal_id": signal.event_id}
    assert order.source == "demo-risk"


def test_short_signal_sells_and_neutral_produces_nothing() -> None:
    risk = RiskCheck(LOOSE, Positions(), now=Clock())
    order = risk.on_signal(_signal(SignalType.SHORT))
    assert isinstance(order, OrderEvent) and order.side is OrderSide.SELL
    assert risk.on_signal(_signal(SignalType.NEUTRAL)) is None
    assert risk.issued == 1


@pytest.mark.parametrize(
    ("held", "side"), [(OrderSide.BUY, OrderSide.SELL), (OrderSide.SELL, OrderSide.BUY)]
)
def test_exit_signal_closes_the_whole_position(held: OrderSide, side: OrderSide) -> None:
    positions = Positions()
    positions.on_fill(_fill(held, 250))
    risk = RiskCheck(LOOSE, positions, now=Clock())
    order = risk.on_signal(_signal(SignalType.EXIT))
    assert isinstance(order, OrderEvent)
    assert (order.side, order.quantity, order.order_type, order.price) == (
        side, 250.0, OrderType.LIMIT, 100.0)


def test_exit_signal_when_flat_produces_nothing() -> None:
    risk = RiskCheck(LOOSE, Positions(), now=Clock())
    assert risk.on_signal(_signal(SignalType.EXIT)) is None
    assert risk.issued == 0 and not risk.refused


def test_exit_of_an_over_limit_book_is_not_refused_for_size() -> None:
    positions = Positions()
    positions.on_fill(_fill(OrderSide.SELL, 5000))
    order = RiskCheck(LOOSE, positions, now=Clock()).on_signal(_signal(SignalType.EXIT))
    assert isinstance(order, OrderEvent) and order.side is OrderSide.BUY
    assert order.quantity == 5000.0


def test_order_ids_are_deterministic_and_unique() -> None:
    def ids() -> list[str]:
        risk = RiskCheck(LOOSE, Positions(), now=Clock(), order_id_prefix="run7-")
        out = [risk.on_signal(_signal()) for _ in range(3)]
        return [o.order_id for o in out if isinstance(o, OrderEvent)]

    assert ids() == ids() == ["run7-1", "run7-2", "run7-3"]


def _refusal(event: object, code: str) -> SystemEvent:
    assert isinstance(event, SystemEvent), event
    assert event.kind == "risk_rejected"
    assert event.severity is Severity.WARNING
    assert event.details["reason_code"] == code
    return event


def test_position_limit_refuses_growth_but_not_reduction() -> None:
    positions = Positions()
    positions.on_fill(_fill(OrderSide.BUY, 950))
    risk = RiskCheck(LOOSE, positions, now=Clock())
    refused = _refusal(risk.on_signal(_signal(SignalType.LONG)), "max_position")
    assert refused.details["projected_position"] == 1050.0
    assert refused.details["limit"] == 1000
    assert refused.symbol == "AAPL"
    assert "refused buy 100 AAPL @ 100" in refused.message
    assert "1050" in refused.message and "1000" in refused.message
    assert isinstance(risk.on_signal(_signal(SignalType.SHORT)), OrderEvent)
    assert risk.refused["max_position"] == 1 and risk.issued == 1


def test_short_side_is_limited_too() -> None:
    positions = Positions()
    positions.on_fill(_fill(OrderSide.SELL, 1000))
    risk = RiskCheck(LOOSE, positions, now=Clock())
    _refusal(risk.on_signal(_signal(SignalType.SHORT)), "max_position")
    assert isinstance(risk.on_signal(_signal(SignalType.LONG)), OrderEvent)


def test_an_over_limit_book_may_still_reduce() -> None:
    positions = Positions()
    positions.on_fill(_fill(OrderSide.BUY, 5000))
    risk = RiskCheck(LOOSE, positions, now=Clock())
    assert isinstance(risk.on_signal(_signal(SignalType.SHORT)), OrderEvent)


def test_notional_limit_at_the_order_price() -> None:
    limits = RiskLimits(max_position=1e6, max_notional=25_000, max_orders_per_s=1e6,
                        default_qty=100)
    positions = Positions()
    positions.on_fill(_fill(OrderSide.BUY, 100, price=100.0))
    risk = RiskCheck(limits, positions, now=Clock())
    assert isinstance(risk.on_signal(_signal(price=120.0)), OrderEvent)  # 200 * 120 = 24,000
    positions.on_fill(_fill(OrderSide.BUY, 100, price=120.0))
    refused = _refusal(risk.on_signal(_signal(price=90.0)), "max_notional")  # 300 * 90
    assert refused.details["projected_notional"] == pytest.approx(27_000)
    assert "27,000.00" in refused.message


def test_order_rate_is_a_token_bucket() -> None:
    clock = Clock()
    limits = RiskLimits(max_position=1e9, max_notional=1e12, max_orders_per_s=2, default_qty=1)
    risk = RiskCheck(limits, Positions(), now=clock)
    results = [risk.on_signal(_signal()) for _ in range(3)]
    assert [type(r) for r in results] == [OrderEvent, OrderEvent, SystemEvent]
    refused = _refusal(results[2], "max_order_rate")
    assert refused.details["retry_after_s"] == pytest.approx(0.5)
    clock.t += 0.5
    assert isinstance(risk.on_signal(_signal()), OrderEvent)
    assert isinstance(risk.on_signal(_signal()), SystemEvent)
    clock.t += 10  # refills only up to the burst
    assert [type(risk.on_signal(_signal())) for _ in range(3)] == [OrderEvent, OrderEvent,
                                                                   SystemEvent]


def test_a_size_refusal_does_not_use_up_the_rate() -> None:
    limits = RiskLimits(max_position=50, max_notional=1e12, max_orders_per_s=1, default_qty=100)
    risk = RiskCheck(limits, Positions(), now=Clock())
    for _ in range(5):
        _refusal(risk.on_signal(_signal()), "max_position")
    assert risk.refused == {"max_position": 5}


def test_signal_without_a_price_is_refused() -> None:
    _refusal(RiskCheck(LOOSE, Positions(), now=Clock()).on_signal(_signal(price=None)),
             "no_price")


def test_refusal_details_are_json_ready() -> None:
    event = RiskCheck(LOOSE, Positions(), now=Clock()).on_signal(_signal(price=None))
    assert isinstance(event, SystemEvent)
    assert SystemEvent.from_dict(event.to_dict()) == event


def test_token_bucket_burst_and_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, capacity=3, now=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.1)
    clock.t += 0.1
    assert bucket.wait_s() == 0.0 and bucket.take()


@pytest.mark.parametrize("bad", [
    {"max_position": 0}, {"max_notional": -1}, {"max_orders_per_s": float("inf")},
    {"default_qty": 0}, {"burst": 0.5},
])
def test_limits_are_validated(bad: dict[str, float]) -> None:
    fields = {"max_position": 1.0, "max_notional": 1.0, "max_orders_per_s": 1.0,
              "default_qty": 1.0, **bad}
    with pytest.raises(ValueError):
        RiskLimits(**fields)
