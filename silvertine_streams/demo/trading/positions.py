"""Positions and PnL per symbol, from fills, by the average-cost method.

Average cost, not FIFO: a position keeps one average entry price. Fills that
grow a position move the average; fills that shrink it realise
``(exit price - average cost) * closed quantity`` (sign flipped for shorts)
and leave the average alone; a fill that crosses zero closes the old position
at the average and opens the rest at the fill price. That is O(1) per fill and
needs no lot list, and for a position that is opened and closed in full it
realises the same PnL as FIFO.

Realised and unrealised PnL are gross; commissions are kept apart and
subtracted only in ``net_pnl``.

Feed it only fills the order lifecycle accepted: it does not dedupe.
"""

from __future__ import annotations

from typing import NamedTuple

from silvertine_streams.demo.trading.feed import mid_price
from silvertine_streams.demo.trading.lifecycle import fill_key
from silvertine_streams.events import FillEvent, MarketDataEvent, OrderSide

__all__ = ["PortfolioTotals", "Position", "Positions"]

# A quantity this close to zero (relative to the quantity traded) is flat:
# fractional fills leave float residue that must not read as a tiny position.
_FLAT_TOLERANCE = 1e-9


class Position(NamedTuple):
    """The position in one symbol at one moment.

    Attributes:
        symbol: the instrument.
        quantity: signed; positive long, negative short, 0.0 flat.
        avg_cost: average entry price of the open quantity; 0.0 when flat.
        realized_pnl: PnL of closed quantity, before commissions.
        commission: commissions paid on every fill.
        mark: last price marked, or None before the first mark.
        unrealized_pnl: ``(mark - avg_cost) * quantity``; 0.0 without a mark.
        fills: fills applied.
    """

    symbol: str
    quantity: float
    avg_cost: float
    realized_pnl: float
    commission: float
    mark: float | None
    unrealized_pnl: float
    fills: int

    @property
    def net_pnl(self) -> float:
        """Realised plus unrealised PnL, less commissions."""
        return self.realized_pnl + self.unrealized_pnl - self.commission

    @property
    def notional(self) -> float:
        """Absolute value of the position at its mark (at its average cost before a mark)."""
        price = self.mark if self.mark is not None else self.avg_cost
        return abs(self.quantity) * price


class PortfolioTotals(NamedTuple):
    """PnL summed over every symbol."""

    realized_pnl: float
    unrealized_pnl: float
    commission: float

    @property
    def net_pnl(self) -> float:
        """Realised plus unrealised PnL, less commissions."""
        return self.realized_pnl + self.unrealized_pnl - self.commission


class _Book:
    __slots__ = ("quantity", "avg_cost", "realized", "commission", "mark", "fills")

    def __init__(self) -> None:
        self.quantity = 0.0
        self.avg_cost = 0.0
        self.realized = 0.0
        self.commission = 0.0
        self.mark: float | None = None
        self.fills = 0

    def unrealized(self) -> float:
        mark = self.mark
        return 0.0 if mark is None else (mark - self.avg_cost) * self.quantity


class Positions:
    """Positions of every symbol traded, updated fill by fill."""

    __slots__ = ("_books",)

    def __init__(self) -> None:
        self._books: dict[str, _Book] = {}

    def on_fill(self, fill: FillEvent, side: OrderSide | None = None) -> Position:
        """Apply ``fill``; return the symbol's position after it.

        Args:
            fill: an accepted fill.
            side: its order's side, used when the fill does not say its own
                (the contract's fills need not).

        Raises:
            ValueError: neither ``fill`` nor ``side`` says which way it traded.
        """
        traded = fill.side if fill.side is not None else side
        if traded is None:
            raise ValueError(
                f"fill {fill_key(fill)} of order {fill.order_id} has no side: pass its order's"
            )
        book = self._book(fill.symbol)
        qty = fill.executed_quantity
        price = fill.executed_price
        signed = qty if traded is OrderSide.BUY else -qty
        held = book.quantity
        if held == 0.0 or (held > 0.0) == (signed > 0.0):
            total = held + signed
            book.avg_cost = (book.avg_cost * abs(held) + price * qty) / abs(total)
            book.quantity = total
        else:
            closed = min(qty, abs(held))
            direction = 1.0 if held > 0.0 else -1.0
            book.realized += (price - book.avg_cost) * closed * direction
            total = held + signed
            if abs(total) <= _FLAT_TOLERANCE * max(1.0, qty, abs(held)):
                book.quantity = 0.0
                book.avg_cost = 0.0
            else:
                if (total > 0.0) != (held > 0.0):
                    book.avg_cost = price  # crossed zero: the rest opens at the fill
                book.quantity = total
        book.commission += fill.commission
        book.fills += 1
        return self._view(fill.symbol, book)

    def mark(self, symbol: str, price: float) -> float:
        """Mark ``symbol`` at ``price`` (e.g. the mid); return its unrealised PnL."""
        book = self._book(symbol)
        book.mark = price
        return book.unrealized()

    def on_tick(self, md: MarketDataEvent) -> None:
        """Mark the tick's symbol at its mid."""
        self.mark(md.symbol, mid_price(md))

    def quantity(self, symbol: str) -> float:
        """Return the signed position in ``symbol`` (0.0 if never traded)."""
        book = self._books.get(symbol)
        return 0.0 if book is None else book.quantity

    def position(self, symbol: str) -> Position:
        """Return the position in ``symbol`` (flat if never traded)."""
        book = self._books.get(symbol)
        return self._view(symbol, _Book() if book is None else book)

    def snapshot(self) -> dict[str, Position]:
        """Return every symbol's position, by symbol, sorted; for the live view."""
        return {symbol: self._view(symbol, self._books[symbol]) for symbol in sorted(self._books)}

    def totals(self) -> PortfolioTotals:
        """Return PnL summed over every symbol."""
        books = self._books.values()
        return PortfolioTotals(
            realized_pnl=sum(b.realized for b in books),
            unrealized_pnl=sum(b.unrealized() for b in books),
            commission=sum(b.commission for b in books),
        )

    def _book(self, symbol: str) -> _Book:
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = _Book()
        return book

    @staticmethod
    def _view(symbol: str, book: _Book) -> Position:
        return Position(
            symbol,
            book.quantity,
            book.avg_cost,
            book.realized,
            book.commission,
            book.mark,
            book.unrealized(),
            book.fills,
        )
