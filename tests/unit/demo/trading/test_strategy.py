"""Unit tests for silvertine_streams.demo.trading.strategy (pure)."""

from __future__ import annotations

import pytest

from silvertine_streams.demo.trading.feed import MarketFeed, mid_price
from silvertine_streams.demo.trading.strategy import MovingAverageCrossover
from silvertine_streams.events import MarketDataEvent, SignalType


def _md(mid: float, symbol: str = "AAPL") -> MarketDataEvent:
    return MarketDataEvent(symbol=symbol, price=mid, bid=mid - 0.01, ask=mid + 0.01)


def _run(strategy: MovingAverageCrossover, mids: list[float], symbol: str = "AAPL") -> list:
    return [strategy.on_tick(_md(m, symbol)) for m in mids]


def test_no_signal_until_the_slow_window_is_full_and_a_side_is_known() -> None:
    strategy = MovingAverageCrossover(fast=2, slow=4)
    # Rising from the start: the first full window only sets the side.
    assert _run(strategy, [100.0, 101.0, 102.0, 103.0, 104.0]) == [None] * 5


def test_cross_below_then_above_gives_short_then_long() -> None:
    strategy = MovingAverageCrossover(fast=2, slow=4, strategy_id="s1", strength_scale=0.01)
    out = _run(strategy, [100.0, 101.0, 102.0, 103.0, 90.0, 90.0, 110.0, 120.0])
    signals = [(i, s.signal_type) for i, s in enumerate(out) if s is not None]
    assert signals == [(4, SignalType.SHORT), (6, SignalType.LONG)]
    sell, buy = out[4], out[6]
    assert sell is not None and buy is not None
    assert -1.0 <= sell.strength < 0.0 < buy.strength <= 1.0
    assert sell.target_price == pytest.approx(90.0)
    assert buy.target_price == pytest.approx(110.0)
    assert buy.strategy_id == "s1" and buy.symbol == "AAPL"
    assert buy.metadata["fast_ma"] > buy.metadata["slow_ma"]
    assert sell.reason == "fast MA(2) crossed below slow MA(4)"
    assert buy.reason == "fast MA(2) crossed above slow MA(4)"


def test_strength_is_the_clipped_normalised_distance() -> None:
    strategy = MovingAverageCrossover(fast=1, slow=2, strength_scale=0.1)
    _run(strategy, [100.0, 99.0])  # fast below slow
    small = strategy.on_tick(_md(99.2))  # fast 99.2 vs slow 99.1
    assert small is not None and small.signal_type is SignalType.LONG
    assert small.strength == pytest.approx((99.2 - 99.1) / (99.1 * 0.1))
    strategy = MovingAverageCrossover(fast=1, slow=2, strength_scale=0.001)
    _run(strategy, [100.0, 99.0])
    big = strategy.on_tick(_md(150.0))
    assert big is not None and big.strength == 1.0


def test_flat_prices_never_signal() -> None:
    strategy = MovingAverageCrossover(fast=3, slow=7)
    assert all(s is None for s in _run(strategy, [100.1] * 5000))


def test_symbols_are_independent() -> None:
    strategy = MovingAverageCrossover(fast=2, slow=3)
    _run(strategy, [100.0, 101.0, 102.0], "AAPL")  # AAPL: fast above
    _run(strategy, [100.0, 99.0, 98.0], "MSFT")  # MSFT: fast below
    assert strategy.on_tick(_md(90.0, "AAPL")) is not None
    assert strategy.on_tick(_md(98.0, "MSFT")) is None  # still below
    assert strategy.averages("TSLA") is None


def test_running_averages_match_a_recomputation_over_a_long_walk() -> None:
    fast, slow = 5, 20
    strategy = MovingAverageCrossover(fast=fast, slow=slow)
    mids: list[float] = []
    crossings = 0
    for md in MarketFeed(["AAPL"], seed=11, vol=0.002).ticks(5000):
        mids.append(mid_price(md))
        if strategy.on_tick(md) is not None:
            crossings += 1
    averages = strategy.averages("AAPL")
    assert averages is not None
    assert averages[0] == pytest.approx(sum(mids[-fast:]) / fast, rel=1e-12)
    assert averages[1] == pytest.approx(sum(mids[-slow:]) / slow, rel=1e-12)
    assert crossings > 10


def test_signals_alternate_sides() -> None:
    strategy = MovingAverageCrossover()
    sides = [s.signal_type for md in MarketFeed(["A", "B"], seed=5).ticks(4000)
             if (s := strategy.on_tick(md)) is not None and s.symbol == "A"]
    assert sides and all(a != b for a, b in zip(sides, sides[1:], strict=False))


@pytest.mark.parametrize(("fast", "slow"), [(0, 5), (5, 5), (6, 5)])
def test_window_lengths_are_checked(fast: int, slow: int) -> None:
    with pytest.raises(ValueError, match="fast < slow"):
        MovingAverageCrossover(fast=fast, slow=slow)
