"""The trading pieces wired as the demo wires them: feed → strategy → risk → venue → tables."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from silvertine_streams.demo.trading import (
    MarketFeed,
    MovingAverageCrossover,
    OrderLifecycle,
    Positions,
    Rejection,
    RiskCheck,
    RiskLimits,
    SimulatedVenue,
)
from silvertine_streams.events import (
    Event,
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    SignalEvent,
    SystemEvent,
)

SYMBOLS = ("AAPL", "MSFT", "NVDA", "ESZ6")


@dataclass
class Run:
    published: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    lifecycle: OrderLifecycle = field(default_factory=OrderLifecycle)
    positions: Positions = field(default_factory=Positions)


def _run(seed: int, ticks: int, limits: RiskLimits) -> Run:
    run = Run()
    clock = [0.0]
    feed = MarketFeed(SYMBOLS, seed=seed)
    strategy = MovingAverageCrossover(fast=3, slow=10)
    risk = RiskCheck(limits, run.positions, now=lambda: clock[0])
    venue = SimulatedVenue(seed=seed + 1, reject_probability=0.05, cancel_probability=0.05)
    for n, md in enumerate(feed.ticks(ticks)):
        clock[0] = n * 0.05
        run.published.append(md)
        run.positions.on_tick(md)
        signal = strategy.on_tick(md)
        if signal is None:
            continue
        run.published.append(signal)
        decision = risk.on_signal(signal)
        if decision is None:
            continue
        run.published.append(decision)
        if isinstance(decision, SystemEvent):
            continue
        for event in [decision, *venue.on_order(decision)]:
            assert isinstance(event, OrderEvent | FillEvent)
            outcome = run.lifecycle.apply(event)
            if isinstance(outcome, Rejection):
                run.rejections.append(outcome)
                continue
            run.published.append(event)
            if isinstance(event, FillEvent):
                run.positions.on_fill(event)
    return run


LIMITS = RiskLimits(max_position=300, max_notional=40_000, max_orders_per_s=4, default_qty=100)


def test_the_pipeline_is_legal_consistent_and_within_limits() -> None:
    run = _run(seed=42, ticks=8000, limits=LIMITS)
    assert run.rejections == []
    fills = [e for e in run.published if isinstance(e, FillEvent)]
    assert fills and run.lifecycle.consistent_with(fills)
    kinds = Counter(type(e).__name__ for e in run.published)
    assert kinds["SignalEvent"] > 50 and kinds["OrderEvent"] > 50
    refusals = Counter(e.details["reason_code"] for e in run.published
                       if isinstance(e, SystemEvent))
    assert refusals["max_position"] > 0 and refusals["max_order_rate"] > 0
    for symbol in SYMBOLS:
        signed = sum(f.executed_quantity if f.side is OrderSide.BUY else -f.executed_quantity
                     for f in fills if f.symbol == symbol)
        assert run.positions.quantity(symbol) == signed
        assert abs(signed) <= LIMITS.max_position


def test_the_pipeline_is_deterministic_for_a_seed() -> None:
    def shape(run: Run) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for e in run.published:
            if isinstance(e, MarketDataEvent):
                out.append((e.symbol, e.bid, e.ask, e.sequence))
            elif isinstance(e, SignalEvent):
                out.append((e.symbol, e.signal_type, e.strength, e.reason))
            elif isinstance(e, OrderEvent):
                out.append((e.order_id, e.status, e.price))
            elif isinstance(e, FillEvent):
                out.append((e.trade_id, e.executed_quantity, e.executed_price))
            else:
                assert isinstance(e, SystemEvent)
                out.append((e.kind, e.details["reason_code"]))
        return out

    assert shape(_run(7, 2000, LIMITS)) == shape(_run(7, 2000, LIMITS))
