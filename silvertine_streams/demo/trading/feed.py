"""A simulated market: random-walk quotes per symbol, and ways to spoil a stream.

:class:`MarketFeed` draws every number from one ``random.Random(seed)``, so a
seed fixes prices, spreads, sizes and sequence numbers. Event ids and
timestamps are *not* derived from the seed: the canonical log dedupes by event
id, and a second run re-using ids with other timestamps would be reported as
id conflicts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from silvertine_streams.events import MarketDataEvent

__all__ = ["MarketFeed", "mid_price"]


def mid_price(md: MarketDataEvent) -> float:
    """Return the middle of the quote of ``md``, or its price when it is not quoted."""
    bid, ask = md.bid, md.ask
    if bid is not None and ask is not None:
        return (bid + ask) * 0.5
    return md.price


class MarketFeed:
    """Quotes for a fixed set of symbols, each a geometric random walk of its mid.

    Each tick moves the mid by ``exp(N(0, vol))``, quotes a spread of a random
    whole number of ticks inside ``spread_ticks`` around it, and reports a trade
    at the bid or the ask. Sequences count up from 1 per ``(source, symbol)``,
    the stream the engine's sequence tracker follows.

    Attributes:
        symbols: the symbols, in round-robin order.
        source: the ``source`` of every event.
        tick_size: price increment; every bid, ask and price is a multiple of it.
    """

    __slots__ = (
        "symbols",
        "source",
        "tick_size",
        "_spread",
        "_vol",
        "_lot",
        "_decimals",
        "_min_mid",
        "_rng",
        "_mids",
        "_sequences",
        "_cursor",
    )

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int,
        tick_size: float = 0.01,
        spread_ticks: tuple[int, int] = (1, 3),
        vol: float = 0.0005,
        source: str = "demo-feed",
        start_price: float | Mapping[str, float] = 100.0,
        lot: float = 100.0,
    ) -> None:
        """Set up the feed.

        Args:
            symbols: distinct symbols to quote.
            seed: seed of the feed's random generator.
            tick_size: price increment, positive.
            spread_ticks: inclusive range of the spread in ticks, ``1 <= low <= high``.
            vol: standard deviation of the log-return per tick, non-negative.
            source: the ``source`` of the events.
            start_price: first mid of every symbol, or one per symbol.
            lot: sizes and volumes are whole multiples of it.

        Raises:
            ValueError: an argument is out of range.
        """
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be distinct and not empty, got {list(symbols)}")
        low, high = spread_ticks
        if not (tick_size > 0 and 1 <= low <= high and vol >= 0 and lot > 0):
            raise ValueError(
                "need tick_size > 0, 1 <= spread_ticks[0] <= spread_ticks[1], vol >= 0, "
                f"lot > 0; got {tick_size}, {spread_ticks}, {vol}, {lot}"
            )
        starts = (
            dict(start_price)
            if isinstance(start_price, Mapping)
            else dict.fromkeys(symbols, float(start_price))
        )
        if set(starts) != set(symbols) or not all(p > 0 for p in starts.values()):
            raise ValueError("start_price needs one positive price for every symbol")
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.source = source
        self.tick_size = tick_size
        self._spread = (low, high)
        self._vol = vol
        self._lot = lot
        self._decimals = max(0, -math.floor(math.log10(tick_size)) + 2)
        # The bid is at least one tick above zero whatever the spread.
        self._min_mid = tick_size * (high + 1)
        self._rng = random.Random(seed)
        self._mids = {s: float(starts[s]) for s in self.symbols}
        self._sequences = dict.fromkeys(self.symbols, 0)
        self._cursor = 0

    def mid(self, symbol: str) -> float:
        """Return the current (unrounded) mid of ``symbol``."""
        return self._mids[self._known(symbol)]

    def next_tick(self, symbol: str) -> MarketDataEvent:
        """Move ``symbol`` one step and return its new quote.

        Raises:
            ValueError: ``symbol`` is not one of the feed's symbols.
        """
        rng = self._rng
        mid = self._mids[self._known(symbol)] * math.exp(rng.gauss(0.0, self._vol))
        if mid < self._min_mid:
            mid = self._min_mid
        self._mids[symbol] = mid
        tick = self.tick_size
        spread = rng.randint(*self._spread)
        bid_ticks = math.floor(mid / tick - spread * 0.5)
        bid = round(bid_ticks * tick, self._decimals)
        ask = round((bid_ticks + spread) * tick, self._decimals)
        lot = self._lot
        sequence = self._sequences[symbol] + 1
        self._sequences[symbol] = sequence
        return MarketDataEvent(
            symbol=symbol,
            price=ask if rng.random() < 0.5 else bid,
            volume=lot * rng.randint(1, 10),
            bid=bid,
            ask=ask,
            bid_size=lot * rng.randint(1, 20),
            ask_size=lot * rng.randint(1, 20),
            source=self.source,
            sequence=sequence,
        )

    def ticks(self, n: int) -> list[MarketDataEvent]:
        """Return the next ``n`` ticks, visiting the symbols round-robin.

        The rotation continues where the previous call stopped.
        """
        symbols = self.symbols
        out = []
        for _ in range(n):
            out.append(self.next_tick(symbols[self._cursor]))
            self._cursor = (self._cursor + 1) % len(symbols)
        return out

    def skip(self, symbol: str, count: int = 1) -> range:
        """Burn ``count`` sequence numbers of ``symbol`` so its next tick shows a gap.

        Returns:
            The sequence numbers that will never be sent.
        """
        start = self._sequences[self._known(symbol)] + 1
        self._sequences[symbol] += count
        return range(start, start + count)

    @staticmethod
    def inject_duplicate(event: MarketDataEvent, copies: int = 1) -> list[MarketDataEvent]:
        """Return ``event`` followed by ``copies`` redeliveries of it (same event id).

        The canonical log must store it once; the sequence tracker sees the
        copies as stale.
        """
        return [event] * (copies + 1)

    @staticmethod
    def inject_out_of_order(
        events: Sequence[MarketDataEvent], index: int | None = None
    ) -> list[MarketDataEvent]:
        """Return a copy of ``events`` with one event swapped with its stream's next one.

        Args:
            events: ticks, e.g. from :meth:`ticks`.
            index: position of the event to delay; by default the first event
                whose ``(source, symbol)`` stream has a later event in the list.

        Raises:
            ValueError: no event at ``index`` (or none at all) has a later
                event of its stream to swap with.
        """
        out = list(events)
        candidates = range(len(out)) if index is None else (index,)
        for i in candidates:
            if not 0 <= i < len(out):
                break
            stream = (out[i].source, out[i].symbol)
            for j in range(i + 1, len(out)):
                if (out[j].source, out[j].symbol) == stream:
                    out[i], out[j] = out[j], out[i]
                    return out
        raise ValueError("no event has a later event of the same stream to swap with")

    def _known(self, symbol: str) -> str:
        if symbol not in self._mids:
            raise ValueError(f"{symbol!r} is not quoted by this feed; symbols: {self.symbols}")
        return symbol
