"""Unit tests for silvertine_streams.demo.trading.book: order states from logged order
events and fills, the same whatever their interleaving (pure)."""

from __future__ import annotations

import itertools

from silvertine_streams.demo.trading.book import OrderBook, order_status
from silvertine_streams.events import FillEvent, OrderEvent, OrderSide, OrderStatus


def order(status: OrderStatus, order_id: str = "o-1", qty: float = 100.0) -> OrderEvent:
    return OrderEvent(order_id=order_id, symbol="AAPL", side=OrderSide.BUY, quantity=qty,
                      price=10.0, status=status)


def fill(qty: float, order_id: str = "o-1") -> FillEvent:
    return FillEvent(order_id=order_id, symbol="AAPL", executed_quantity=qty,
                     executed_price=10.0, side=OrderSide.BUY)


def test_status_comes_from_order_events_and_fills() -> None:
    assert order_status(OrderStatus.SUBMITTED, 100.0, 0.0) is OrderStatus.SUBMITTED
    assert order_status(OrderStatus.SUBMITTED, 100.0, 40.0) is OrderStatus.PARTIALLY_FILLED
    assert order_status(OrderStatus.SUBMITTED, 100.0, 100.0) is OrderStatus.FILLED
    assert order_status(OrderStatus.CANCELLED, 100.0, 40.0) is OrderStatus.CANCELLED
    assert order_status(OrderStatus.REJECTED, 100.0, 0.0) is OrderStatus.REJECTED


def test_any_interleaving_of_orders_and_fills_gives_the_same_book() -> None:
    orders = [order(OrderStatus.PENDING), order(OrderStatus.SUBMITTED)]
    fills = [fill(30.0), fill(70.0)]
    results = set()
    # Order events keep their log order, fills theirs; the two logs interleave freely.
    for slots in itertools.combinations(range(4), 2):
        book, o, f = OrderBook(), iter(orders), iter(fills)
        for i in range(4):
            if i in slots:
                book.apply_order(next(o))
            else:
                book.apply_fill(next(f))
        booked = book.get("o-1")
        assert booked is not None
        results.add((booked.status, booked.filled_qty, booked.fills, booked.side))
    assert results == {(OrderStatus.FILLED, 100.0, 2, OrderSide.BUY)}


def test_an_illegal_status_change_is_refused_and_counted() -> None:
    book = OrderBook()
    assert book.apply_order(order(OrderStatus.PENDING))
    assert book.apply_order(order(OrderStatus.REJECTED))
    assert not book.apply_order(order(OrderStatus.SUBMITTED))
    booked = book.get("o-1")
    assert booked is not None and booked.status is OrderStatus.REJECTED
    assert book.refused == {"illegal_transition": 1}
    assert book.status_counts()[OrderStatus.REJECTED] == 1


def test_fills_before_their_order_are_kept_and_counted_once_it_arrives() -> None:
    book = OrderBook()
    book.apply_fill(fill(100.0, "o-2"))
    early = book.get("o-2")
    assert early is not None and early.status is None and book.side_of("o-2") is None
    assert book.status_counts()[OrderStatus.FILLED] == 0
    book.apply_order(order(OrderStatus.PENDING, "o-2"))
    later = book.get("o-2")
    assert later is not None and later.status is OrderStatus.FILLED
    assert book.side_of("o-2") is OrderSide.BUY
    assert list(book.snapshot()) == ["o-2"] and len(book) == 1
