"""The demo's trading logic: feed, strategy, risk, venue, order lifecycle, positions.

Pure code, like ``domain/``: no faust, redis or kafka imports, no I/O; random
generators are seeded and clocks injected. Each piece is a small subscriber
with one method that takes an event and returns what it produces; the demo's
glue publishes those::

    feed.next_tick(symbol) / feed.ticks(n)   -> MarketDataEvent(s)
    strategy.on_tick(md)                     -> SignalEvent | None
    risk.on_signal(signal)                   -> OrderEvent (PENDING) | SystemEvent | None
    venue.on_order(order)                    -> [OrderEvent (SUBMITTED), FillEvent, ...]
                                                or [OrderEvent (REJECTED)]
    lifecycle.apply(order_or_fill)           -> Transition | Rejection
    book.apply_order(order) / apply_fill(fill) -> orders as logged, in any interleaving
    positions.on_fill(fill, side)            -> Position
"""

from __future__ import annotations

from silvertine_streams.demo.trading.book import BookedOrder, OrderBook, order_status
from silvertine_streams.demo.trading.feed import MarketFeed, mid_price
from silvertine_streams.demo.trading.lifecycle import (
    FILL_STATES,
    FINAL_STATES,
    LEGAL_STATUS_CHANGES,
    OrderLifecycle,
    OrderSnapshot,
    RejectCode,
    Rejection,
    Transition,
    fill_key,
    quantity_tolerance,
)
from silvertine_streams.demo.trading.positions import PortfolioTotals, Position, Positions
from silvertine_streams.demo.trading.risk import (
    REASON_CODES,
    RISK_REJECTED,
    PositionSource,
    RiskCheck,
    RiskLimits,
    TokenBucket,
)
from silvertine_streams.demo.trading.strategy import MovingAverageCrossover
from silvertine_streams.demo.trading.venue import SimulatedVenue, VenueEvent

__all__ = [
    "FILL_STATES",
    "FINAL_STATES",
    "LEGAL_STATUS_CHANGES",
    "REASON_CODES",
    "BookedOrder",
    "RISK_REJECTED",
    "MarketFeed",
    "MovingAverageCrossover",
    "OrderBook",
    "OrderLifecycle",
    "OrderSnapshot",
    "PortfolioTotals",
    "Position",
    "PositionSource",
    "Positions",
    "RejectCode",
    "Rejection",
    "RiskCheck",
    "RiskLimits",
    "SimulatedVenue",
    "TokenBucket",
    "Transition",
    "VenueEvent",
    "fill_key",
    "mid_price",
    "order_status",
    "quantity_tolerance",
]
