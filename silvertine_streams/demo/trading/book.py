"""The desk's order book: every order's state from the logged order events and fills.

:class:`~silvertine_streams.demo.trading.OrderLifecycle` checks a venue's
answers *before* they are published, in the order the venue made them. This
book follows what was *logged*, and the order and fill logs are read
independently (a fill may be handed over before its order's SUBMITTED), so it
is built to give the same states whatever the interleaving of the two:

* an order's *reported* status comes from its order events, in log order
  (PENDING, then SUBMITTED, REJECTED or CANCELLED as ``LEGAL_STATUS_CHANGES``
  allow; an illegal change is refused and counted);
* its filled quantity is the sum of its fills, in any order, even fills that
  arrive before the order itself;
* its status is the reported one, except that an open order (PENDING or
  SUBMITTED) with fills is PARTIALLY_FILLED, and FILLED once they reach its
  quantity (:func:`~silvertine_streams.demo.trading.quantity_tolerance`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import NamedTuple

from silvertine_streams.demo.trading.lifecycle import LEGAL_STATUS_CHANGES, quantity_tolerance
from silvertine_streams.events import FillEvent, OrderEvent, OrderSide, OrderStatus

__all__ = ["BookedOrder", "OrderBook", "order_status"]

_S = OrderStatus
_OPEN = frozenset({_S.PENDING, _S.SUBMITTED})


def order_status(reported: OrderStatus, quantity: float, filled: float) -> OrderStatus:
    """Return an order's status from its reported status and its filled quantity."""
    if reported in _OPEN and filled > 0.0:
        done = quantity > 0.0 and filled >= quantity - quantity_tolerance(quantity)
        return _S.FILLED if done else _S.PARTIALLY_FILLED
    return reported


class BookedOrder(NamedTuple):
    """One order as the book knows it.

    Attributes:
        order_id: the order.
        symbol: its symbol ("" while only fills are known).
        side: its side (None while only fills are known).
        quantity: its quantity (0.0 while only fills are known).
        reported: the status its order events reported (None: none logged yet).
        filled_qty: the sum of its fills.
        fills: how many fills.
    """

    order_id: str
    symbol: str
    side: OrderSide | None
    quantity: float
    reported: OrderStatus | None
    filled_qty: float
    fills: int

    @property
    def status(self) -> OrderStatus | None:
        """The order's status (None while only fills are known)."""
        if self.reported is None:
            return None
        return order_status(self.reported, self.quantity, self.filled_qty)


class _Entry:
    __slots__ = ("symbol", "side", "quantity", "reported", "fills")

    def __init__(self) -> None:
        self.symbol = ""
        self.side: OrderSide | None = None
        self.quantity = 0.0
        self.reported: OrderStatus | None = None
        self.fills: list[float] = []


class OrderBook:
    """Orders by id, from order events and fills applied in any interleaving.

    Attributes:
        refused: order events not applied, by reason (``illegal_transition``).
    """

    __slots__ = ("_orders", "refused")

    def __init__(self) -> None:
        self._orders: dict[str, _Entry] = {}
        self.refused: Counter[str] = Counter()

    def apply_order(self, order: OrderEvent) -> bool:
        """Apply an order event; return False if its status change is illegal (not applied)."""
        entry = self._orders.get(order.order_id)
        if entry is None:
            entry = self._orders[order.order_id] = _Entry()
        reported = entry.reported
        if reported is not None and order.status not in LEGAL_STATUS_CHANGES[reported]:
            self.refused["illegal_transition"] += 1
            return False
        if reported is None:
            entry.symbol, entry.side, entry.quantity = order.symbol, order.side, order.quantity
        entry.reported = order.status
        return True

    def apply_fill(self, fill: FillEvent) -> None:
        """Add a fill to its order's filled quantity."""
        entry = self._orders.get(fill.order_id)
        if entry is None:
            entry = self._orders[fill.order_id] = _Entry()
            entry.symbol = fill.symbol
        entry.fills.append(fill.executed_quantity)

    def side_of(self, order_id: str) -> OrderSide | None:
        """Return the side of an order whose order events were applied."""
        entry = self._orders.get(order_id)
        return None if entry is None else entry.side

    def get(self, order_id: str) -> BookedOrder | None:
        """Return what the book knows of ``order_id``."""
        entry = self._orders.get(order_id)
        return None if entry is None else _booked(order_id, entry)

    def snapshot(self) -> dict[str, BookedOrder]:
        """Return every order, by id, in the order the book first heard of it."""
        return {order_id: _booked(order_id, entry) for order_id, entry in self._orders.items()}

    def status_counts(self) -> dict[OrderStatus, int]:
        """Return how many orders are in each status (orders known only by fills aside)."""
        counts = dict.fromkeys(OrderStatus, 0)
        for order_id, entry in self._orders.items():
            status = _booked(order_id, entry).status
            if status is not None:
                counts[status] += 1
        return counts

    def __len__(self) -> int:
        return len(self._orders)


def _booked(order_id: str, entry: _Entry) -> BookedOrder:
    return BookedOrder(order_id, entry.symbol, entry.side, entry.quantity, entry.reported,
                       math.fsum(entry.fills), len(entry.fills))
