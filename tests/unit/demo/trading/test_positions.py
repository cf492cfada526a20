"""Unit tests for silvertine_streams.demo.trading.positions (average cost)."""

from __future__ import annotations

import pytest

from silvertine_streams.demo.trading.positions import Positions
from silvertine_streams.events import FillEvent, MarketDataEvent, OrderSide

BUY, SELL = OrderSide.BUY, OrderSide.SELL


def _fill(side: OrderSide, qty: float, price: float, commission: float = 0.0,
          symbol: str = "AAPL") -> FillEvent:
    return FillEvent(order_id="o", symbol=symbol, side=side, executed_quantity=qty,
                     executed_price=price, commission=commission)


def test_buys_average_their_cost() -> None:
    positions = Positions()
    positions.on_fill(_fill(BUY, 100, 10.0))
    position = positions.on_fill(_fill(BUY, 300, 14.0, commission=1.5))
    assert position.quantity == 400
    assert position.avg_cost == pytest.approx(13.0)
    assert position.realized_pnl == 0.0
    assert position.commission == 1.5
    assert position.fills == 2


def test_a_fill_without_a_side_trades_its_orders_side() -> None:
    positions = Positions()
    unsided = FillEvent(order_id="o", symbol="AAPL", executed_quantity=40, executed_price=10.0)
    assert positions.on_fill(unsided, SELL).quantity == -40
    assert positions.on_fill(_fill(BUY, 10, 10.0), SELL).quantity == -30  # its own side wins
    with pytest.raises(ValueError, match="has no side: pass its order's"):
        positions.on_fill(unsided)
    assert positions.quantity("AAPL") == -30


def test_selling_part_realises_against_the_average_and_keeps_it() -> None:
    positions = Positions()
    positions.on_fill(_fill(BUY, 100, 10.0))
    positions.on_fill(_fill(BUY, 100, 12.0))
    position = positions.on_fill(_fill(SELL, 50, 15.0))
    assert position.quantity == 150
    assert position.avg_cost == pytest.approx(11.0)
    assert position.realized_pnl == pytest.approx(50 * (15.0 - 11.0))


def test_closing_in_full_goes_flat() -> None:
    positions = Positions()
    positions.on_fill(_fill(BUY, 0.1, 10.0))
    positions.on_fill(_fill(BUY, 0.2, 10.0))
    position = positions.on_fill(_fill(SELL, 0.3, 9.0))
    assert position.quantity == 0.0 and position.avg_cost == 0.0
    assert position.realized_pnl == pytest.approx(-0.3)


def test_crossing_zero_opens_the_rest_at_the_fill_price() -> None:
    positions = Positions()
    positions.on_fill(_fill(BUY, 100, 10.0))
    position = positions.on_fill(_fill(SELL, 250, 12.0))
    assert position.quantity == -150
    assert position.avg_cost == 12.0
    assert position.realized_pnl == pytest.approx(200.0)
    # Covering the short below its entry is a gain.
    position = positions.on_fill(_fill(BUY, 150, 11.0))
    assert position.quantity == 0.0
    assert position.realized_pnl == pytest.approx(200.0 + 150.0)


def test_shorts_average_and_realise_with_the_sign_flipped() -> None:
    positions = Positions()
    positions.on_fill(_fill(SELL, 100, 20.0))
    positions.on_fill(_fill(SELL, 100, 22.0))
    position = positions.on_fill(_fill(BUY, 100, 25.0))
    assert position.quantity == -100
    assert position.avg_cost == pytest.approx(21.0)
    assert position.realized_pnl == pytest.approx(-400.0)


def test_mark_gives_unrealised_pnl_and_net_subtracts_commission() -> None:
    positions = Positions()
    assert positions.mark("AAPL", 9.0) == 0.0  # nothing held yet
    positions.on_fill(_fill(BUY, 100, 10.0, commission=0.5))
    assert positions.mark("AAPL", 10.5) == pytest.approx(50.0)
    positions.on_fill(_fill(SELL, 50, 11.0, commission=0.25))
    position = positions.position("AAPL")
    assert position.mark == 10.5
    assert position.unrealized_pnl == pytest.approx(25.0)
    assert position.net_pnl == pytest.approx(50.0 + 25.0 - 0.75)
    assert position.notional == pytest.approx(50 * 10.5)


def test_on_tick_marks_at_the_mid() -> None:
    positions = Positions()
    positions.on_fill(_fill(SELL, 10, 100.0))
    positions.on_tick(MarketDataEvent(symbol="AAPL", price=99.0, bid=98.0, ask=99.0))
    assert positions.position("AAPL").unrealized_pnl == pytest.approx(10 * 1.5)


def test_snapshot_totals_and_unknown_symbols() -> None:
    positions = Positions()
    positions.on_fill(_fill(BUY, 10, 5.0, symbol="MSFT", commission=0.1))
    positions.on_fill(_fill(SELL, 10, 7.0, symbol="MSFT", commission=0.1))
    positions.on_fill(_fill(BUY, 10, 5.0, symbol="AAPL"))
    positions.mark("AAPL", 6.0)
    snapshot = positions.snapshot()
    assert list(snapshot) == ["AAPL", "MSFT"]
    assert snapshot["MSFT"].quantity == 0.0
    totals = positions.totals()
    assert totals.realized_pnl == pytest.approx(20.0)
    assert totals.unrealized_pnl == pytest.approx(10.0)
    assert totals.net_pnl == pytest.approx(29.8)
    assert positions.quantity("TSLA") == 0.0
    assert positions.position("TSLA").fills == 0
    assert "TSLA" not in positions.snapshot()


def test_average_cost_matches_fifo_over_a_round_trip() -> None:
    # Opened and closed in full, both methods realise sells minus buys.
    fills = [(BUY, 30, 10.0), (BUY, 70, 11.0), (SELL, 40, 12.0), (BUY, 10, 9.0),
             (SELL, 70, 10.5)]
    positions = Positions()
    for side, qty, price in fills:
        positions.on_fill(_fill(side, qty, price))
    cash = sum((q * p if s is SELL else -q * p) for s, q, p in fills)
    assert positions.quantity("AAPL") == 0.0
    assert positions.position("AAPL").realized_pnl == pytest.approx(cash)
