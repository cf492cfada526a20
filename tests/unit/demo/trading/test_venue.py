"""Unit tests for silvertine_streams.demo.trading.venue (pure, seeded)."""

from __future__ import annotations

import math

import pytest

from silvertine_streams.demo.trading.lifecycle import OrderLifecycle, Rejection
from silvertine_streams.demo.trading.venue import SimulatedVenue
from silvertine_streams.events import (
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    OrderStatus,
    OrderType,
)


def _order(n: int = 1, side: OrderSide = OrderSide.BUY, qty: float = 100.0,
           price: float | None = 100.0, kind: OrderType = OrderType.LIMIT) -> OrderEvent:
    return OrderEvent(order_id=f"o-{n}", symbol="AAPL", side=side, quantity=qty,
                      order_type=kind, price=price, strategy_id="ma-cross")


def _shape(events: list) -> list[tuple[object, ...]]:
    return [(e.status,) if isinstance(e, OrderEvent)
            else (e.trade_id, e.executed_quantity, e.executed_price) for e in events]


def test_accepted_order_is_submitted_then_filled_in_full() -> None:
    venue = SimulatedVenue(seed=1, reject_probability=0.0)
    for n in range(200):
        order = _order(n, side=OrderSide.BUY if n % 2 else OrderSide.SELL, qty=100.0 + n)
        events = venue.on_order(order)
        ack = events[0]
        fills = [f for f in events if isinstance(f, FillEvent)]
        assert isinstance(ack, OrderEvent) and ack.status is OrderStatus.SUBMITTED
        assert ack.order_id == order.order_id and ack.event_id != order.event_id
        assert ack.source == "demo-venue"
        assert 1 <= len(fills) == len(events) - 1 <= 3
        assert math.fsum(f.executed_quantity for f in fills) == order.quantity
        assert all(f.executed_quantity.is_integer() and f.executed_quantity > 0 for f in fills)
        assert [f.trade_id for f in fills] == [f"o-{n}-{i}" for i in range(1, len(fills) + 1)]
        assert all((f.exchange, f.commission_asset, f.side) == ("SIM", "USD", order.side)
                   for f in fills)


def test_limit_prices_are_never_worse_than_the_limit() -> None:
    venue = SimulatedVenue(seed=2, reject_probability=0.0, improvement_ticks=(0, 3))
    for n in range(300):
        side = OrderSide.BUY if n % 2 else OrderSide.SELL
        limit = 50.0 + n * 0.0137  # off the tick grid on purpose
        for fill in venue.on_order(_order(n, side=side, price=limit))[1:]:
            assert isinstance(fill, FillEvent)
            if side is OrderSide.BUY:
                assert fill.executed_price <= limit
            else:
                assert fill.executed_price >= limit
            assert abs(fill.executed_price - limit) <= 0.04 + 1e-9


def test_tiny_limits_below_a_tick_fill_at_the_limit() -> None:
    venue = SimulatedVenue(seed=3, reject_probability=0.0, improvement_ticks=(1, 1))
    fills = venue.on_order(_order(price=0.004))[1:]
    assert fills and all(isinstance(f, FillEvent) and f.executed_price == 0.004 for f in fills)


def test_commission_and_latency_metadata() -> None:
    venue = SimulatedVenue(seed=4, reject_probability=0.0, commission_per_share=0.01,
                           latency_ms=(1.0, 2.0))
    events = venue.on_order(_order(qty=300))
    latencies = [e.metadata["latency_ms"] for e in events]
    assert latencies == sorted(latencies) and 1.0 <= latencies[0] <= 2.0
    for fill in events[1:]:
        assert isinstance(fill, FillEvent)
        assert fill.commission == pytest.approx(0.01 * fill.executed_quantity)


def test_fractional_quantities_split_exactly() -> None:
    venue = SimulatedVenue(seed=5, reject_probability=0.0)
    for n in range(100):
        fills = [f for f in venue.on_order(_order(n, qty=0.37)) if isinstance(f, FillEvent)]
        assert sum(f.executed_quantity for f in fills) == pytest.approx(0.37, abs=1e-12)


def test_same_seed_same_answers() -> None:
    def run(seed: int) -> list[list[tuple[object, ...]]]:
        venue = SimulatedVenue(seed=seed, reject_probability=0.2, cancel_probability=0.2)
        return [_shape(venue.on_order(_order(n))) for n in range(50)]

    assert run(9) == run(9)
    assert run(9) != run(10)


def test_rejects_are_order_events_with_a_reason() -> None:
    venue = SimulatedVenue(seed=6, reject_probability=1.0)
    order = _order()
    [reject] = venue.on_order(order)
    assert isinstance(reject, OrderEvent) and reject.status is OrderStatus.REJECTED
    assert reject.metadata["reason_code"] == "venue_reject"
    assert "refused" in reject.metadata["reason"]
    assert (reject.order_id, reject.quantity, reject.price) == (order.order_id, 100.0, 100.0)
    assert venue.rejected == 1


def test_reject_rate_is_roughly_the_probability() -> None:
    venue = SimulatedVenue(seed=7, reject_probability=0.1)
    firsts = [venue.on_order(_order(n))[0] for n in range(2000)]
    rejected = sum(isinstance(e, OrderEvent) and e.status is OrderStatus.REJECTED for e in firsts)
    assert 140 < rejected < 260


def test_cancel_withdraws_the_unfilled_rest() -> None:
    venue = SimulatedVenue(seed=8, reject_probability=0.0, cancel_probability=1.0)
    for n in range(50):
        events = venue.on_order(_order(n))
        cancel = events[-1]
        assert isinstance(cancel, OrderEvent) and cancel.status is OrderStatus.CANCELLED
        filled = sum(e.executed_quantity for e in events if isinstance(e, FillEvent))
        assert filled < 100.0
        assert cancel.metadata["unfilled_qty"] == pytest.approx(100.0 - filled)


def test_market_orders_need_a_quote_and_stops_are_unsupported() -> None:
    venue = SimulatedVenue(seed=9, reject_probability=0.0, improvement_ticks=(0, 0))
    [reject] = venue.on_order(_order(1, price=None, kind=OrderType.MARKET))
    assert isinstance(reject, OrderEvent) and reject.metadata["reason_code"] == "no_quote"
    assert venue.on_tick(MarketDataEvent(symbol="AAPL", price=10.0, bid=9.99, ask=10.01)) == []
    fills = venue.on_order(_order(2, price=None, kind=OrderType.MARKET))[1:]
    assert fills and all(isinstance(f, FillEvent) and f.executed_price == 10.01 for f in fills)
    stop = OrderEvent(order_id="o-3", symbol="AAPL", side=OrderSide.SELL, quantity=1.0,
                      order_type=OrderType.STOP, stop_price=9.0)
    [reject] = venue.on_order(stop)
    assert isinstance(reject, OrderEvent) and reject.metadata["reason_code"] == "unsupported"


def test_only_new_pending_orders_are_answered() -> None:
    venue = SimulatedVenue(seed=10, reject_probability=0.0)
    order = _order()
    ack = venue.on_order(order)[0]
    assert isinstance(ack, OrderEvent)
    assert venue.on_order(order) == []  # redelivered
    assert venue.on_order(ack) == []  # its own SUBMITTED coming back
    assert venue.orders == 1


def test_every_answer_is_legal_for_the_lifecycle() -> None:
    venue = SimulatedVenue(seed=11, reject_probability=0.1, cancel_probability=0.1)
    lifecycle = OrderLifecycle()
    fills: list[FillEvent] = []
    for n in range(500):
        order = _order(n, qty=float(1 + n % 7) if n % 3 else 0.5 + n / 1000)
        for event in [order, *venue.on_order(order)]:
            outcome = lifecycle.apply(event)
            assert not isinstance(outcome, Rejection), outcome
            if isinstance(event, FillEvent):
                fills.append(event)
    assert lifecycle.consistent_with(fills)
    counts = lifecycle.status_counts()
    assert counts[OrderStatus.PENDING] == counts[OrderStatus.SUBMITTED] == 0
    assert counts[OrderStatus.PARTIALLY_FILLED] == 0


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="fill_ratio"):
        SimulatedVenue(seed=1, fill_ratio=(0.0, 0.5))
    with pytest.raises(ValueError, match="probabilities"):
        SimulatedVenue(seed=1, reject_probability=1.5)
    with pytest.raises(ValueError, match="latency_ms"):
        SimulatedVenue(seed=1, latency_ms=(5.0, 1.0))


def test_seeded_per_order_a_venue_answers_an_order_the_same_way_every_time() -> None:
    """After a crash the desk's new venue answers the order again: same quantities and prices."""
    first = SimulatedVenue(seed=3, seed_per_order=True, reject_probability=0.2)
    for n in range(50):
        first.on_order(_order(n))  # the first venue saw other orders before
    again = SimulatedVenue(seed=3, seed_per_order=True, reject_probability=0.2)
    assert _shape(first.on_order(_order(99))) == _shape(again.on_order(_order(99)))
    plain_a, plain_b = SimulatedVenue(seed=3), SimulatedVenue(seed=3)
    plain_a.on_order(_order(1))
    assert _shape(plain_a.on_order(_order(99))) != _shape(plain_b.on_order(_order(99)))
