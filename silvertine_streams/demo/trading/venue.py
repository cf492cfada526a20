"""A simulated venue: acknowledge or reject each new order, then fill it.

The event model (what :class:`~silvertine_streams.demo.trading.OrderLifecycle` consumes):

* a new order is an ``OrderEvent`` with status PENDING (from the risk check);
* the venue answers with a *new* ``OrderEvent`` for the same ``order_id``
  carrying the new status: SUBMITTED (accepted), REJECTED (refused; a sentence
  in ``metadata["reason"]``, and ``metadata["reason_code"]`` one of
  ``venue_reject``, ``no_quote``, ``unsupported``) or CANCELLED (the unfilled
  rest withdrawn: ``reason_code`` ``venue_cancel``, ``metadata["unfilled_qty"]``);
* executions are ``FillEvent``\\ s. PARTIALLY_FILLED and FILLED are never sent
  as ``OrderEvent``\\ s: the lifecycle derives them from the fills, so there is
  one source of truth for filled quantity.

A reject is an ``OrderEvent``, not a ``SystemEvent``: it is a normal outcome of
an order, belongs on the order's stream next to its PENDING, and moves the
order's state. Every event the venue makes has a fresh event id (the log
dedupes by event id; re-using the order's id would read as a conflict) and
``source`` set to the venue.

Randomness comes from one ``random.Random(seed)`` (with ``seed_per_order``,
re-seeded from the seed and the order id for each order, so an order answered
again — after a crash — gets the same answers); latency is simulated, never
slept: ``metadata["latency_ms"]`` on each event is the time since the order
reached the venue, increasing along the order's events.
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Any, TypeAlias

from silvertine_streams.events import (
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    OrderStatus,
    OrderType,
)

__all__ = ["COMMISSION_ASSET", "EXCHANGE", "SimulatedVenue", "VenueEvent"]

EXCHANGE = "SIM"
"""The ``exchange`` of every fill the venue makes."""

COMMISSION_ASSET = "USD"
"""The ``commission_asset`` of every fill the venue makes."""

VenueEvent: TypeAlias = OrderEvent | FillEvent
"""What :meth:`SimulatedVenue.on_order` returns."""

# How many recent order ids the venue remembers to ignore a redelivered order.
_SEEN_ORDERS = 100_000
# Room for the "-<n>" a trade id adds to its order id.
_ID_ROOM = 120


class SimulatedVenue:
    """Answer PENDING orders with an ack and fills, or a reject.

    For each PENDING order not seen before, :meth:`on_order` returns, in order:

    * with probability ``reject_probability``: ``[REJECTED]``;
    * otherwise ``[SUBMITTED, fill, ...]``: one to ``max_fills`` fills whose
      quantities sum to the order quantity. Each fill but the last takes a
      fraction drawn from ``fill_ratio`` of what is left (whole units when the
      order quantity is whole). With probability ``cancel_probability`` the
      last planned fill is replaced by a CANCELLED for the rest.

    A limit buy executes at the tick at or below its limit, less a whole
    number of ticks of improvement drawn from ``improvement_ticks``; a sell is
    mirrored. Either way, never worse than the limit. A market order executes
    at the last ask (buy) or bid (sell) seen by :meth:`on_tick`; without one it
    is rejected (``no_quote``). Stop orders are rejected (``unsupported``).
    Commission is ``commission_per_share * qty`` in ``COMMISSION_ASSET``. Each
    fill carries the venue's ``trade_id`` (``"<order id>-<n>"``), ``exchange``
    :data:`EXCHANGE` and the order's side.

    Orders in any other status (including the venue's own answers coming back
    on the bus) and repeated PENDING order ids produce nothing.

    Attributes:
        source: ``source`` of every event made.
        orders: PENDING orders acted on.
        rejected: orders rejected.
    """

    __slots__ = (
        "source",
        "orders",
        "rejected",
        "_rng",
        "_fill_ratio",
        "_commission",
        "_reject_p",
        "_cancel_p",
        "_latency",
        "_max_fills",
        "_tick",
        "_decimals",
        "_improvement",
        "_quotes",
        "_seen",
        "_seed",
        "_seed_per_order",
    )

    def __init__(
        self,
        seed: int,
        fill_ratio: tuple[float, float] = (0.3, 0.9),
        commission_per_share: float = 0.005,
        reject_probability: float = 0.02,
        latency_ms: tuple[float, float] = (0.2, 3.0),
        max_fills: int = 3,
        tick_size: float = 0.01,
        improvement_ticks: tuple[int, int] = (0, 1),
        cancel_probability: float = 0.0,
        source: str = "demo-venue",
        seed_per_order: bool = False,
    ) -> None:
        """Set up the venue.

        Raises:
            ValueError: an argument is out of range.
        """
        low, high = fill_ratio
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"need 0 < fill_ratio[0] <= fill_ratio[1] <= 1, got {fill_ratio}")
        if not (0.0 <= reject_probability <= 1.0 and 0.0 <= cancel_probability <= 1.0):
            raise ValueError("probabilities must be in [0, 1]")
        if not (
            0.0 <= latency_ms[0] <= latency_ms[1]
            and 0 <= improvement_ticks[0] <= improvement_ticks[1]
            and commission_per_share >= 0.0
            and max_fills >= 1
            and tick_size > 0.0
        ):
            raise ValueError(
                "latency_ms and improvement_ticks must be ordered non-negative "
                "ranges; commission >= 0, max_fills >= 1, tick_size > 0"
            )
        self.source = source
        self.orders = 0
        self.rejected = 0
        self._rng = random.Random(seed)
        self._seed = seed
        self._seed_per_order = seed_per_order
        self._fill_ratio = fill_ratio
        self._commission = commission_per_share
        self._reject_p = reject_probability
        self._cancel_p = cancel_probability
        self._latency = latency_ms
        self._max_fills = max_fills
        self._tick = tick_size
        self._decimals = max(0, -math.floor(math.log10(tick_size)) + 2)
        self._improvement = improvement_ticks
        self._quotes: dict[str, tuple[float | None, float | None]] = {}
        self._seen: dict[str, None] = {}

    def on_tick(self, md: MarketDataEvent) -> list[VenueEvent]:
        """Remember the quote of ``md`` for market orders; return nothing."""
        self._quotes[md.symbol] = (md.bid, md.ask)
        return []

    def on_order(self, order: OrderEvent) -> list[VenueEvent]:
        """Answer a new (PENDING) order; see the class docstring for what comes back."""
        if order.status is not OrderStatus.PENDING or order.order_id in self._seen:
            return []
        self._remember(order.order_id)
        self.orders += 1
        rng = self._rng
        if self._seed_per_order:
            rng.seed(f"{self._seed}:{order.order_id}")
        latency = rng.uniform(*self._latency)
        if rng.random() < self._reject_p:
            return [
                self._reject(
                    order,
                    "venue_reject",
                    "the venue refused the order (simulated random reject)",
                    latency,
                )
            ]
        problem = self._pricing_problem(order)
        if problem is not None:
            return [self._reject(order, *problem, latency)]
        base = self._base_price(order)
        events: list[VenueEvent] = [self._status(order, OrderStatus.SUBMITTED, latency, {})]
        parts = self._split(order.quantity)
        cancel = rng.random() < self._cancel_p
        if cancel:
            parts.pop()
        for number, qty in enumerate(parts, 1):
            latency += rng.uniform(*self._latency)
            events.append(self._fill(order, number, qty, self._price(order, base), latency))
        if cancel:
            latency += rng.uniform(*self._latency)
            unfilled = order.quantity - math.fsum(parts)
            events.append(
                self._status(
                    order,
                    OrderStatus.CANCELLED,
                    latency,
                    {
                        "reason": "the venue cancelled the unfilled rest (simulated)",
                        "reason_code": "venue_cancel",
                        "unfilled_qty": unfilled,
                    },
                )
            )
        return events

    def _split(self, quantity: float) -> list[float]:
        """Cut ``quantity`` into 1..max_fills positive parts that sum to it."""
        rng = self._rng
        whole = quantity.is_integer()
        parts: list[float] = []
        left = quantity
        for _ in range(self._max_fills - 1):
            part = left * rng.uniform(*self._fill_ratio)
            if whole:
                part = float(math.floor(part))
            if part <= 0.0 or part >= left:
                break
            parts.append(part)
            left = quantity - math.fsum(parts)
        parts.append(left)
        return parts

    def _pricing_problem(self, order: OrderEvent) -> tuple[str, str] | None:
        """Return ``(reason_code, reason)`` if the order cannot be priced, else None."""
        kind = order.order_type
        if kind is OrderType.LIMIT:
            return None
        if kind is not OrderType.MARKET:
            return "unsupported", f"{kind.value} orders are not supported by the simulated venue"
        if self._touch(order) is None:
            return "no_quote", f"no quote for {order.symbol} to fill a market order at"
        return None

    def _base_price(self, order: OrderEvent) -> float:
        """Return the best price a priceable order may get: its limit, or the touch."""
        price = order.price if order.order_type is OrderType.LIMIT else self._touch(order)
        assert price is not None  # _pricing_problem ruled the other cases out
        return price

    def _touch(self, order: OrderEvent) -> float | None:
        bid, ask = self._quotes.get(order.symbol, (None, None))
        return ask if order.side is OrderSide.BUY else bid

    def _price(self, order: OrderEvent, base: float) -> float:
        """Return an execution price at ``base`` or better, on the tick grid when possible."""
        tick = self._tick
        better = self._rng.randint(*self._improvement) * tick
        if order.side is OrderSide.BUY:
            price = round(math.floor(base / tick + 1e-6) * tick - better, self._decimals)
            # Off-grid limits below a tick, or rounding, must not cross the limit.
            return base if price <= 0.0 or price > base else price
        price = round(math.ceil(base / tick - 1e-6) * tick + better, self._decimals)
        return base if price < base else price

    def _fill(
        self, order: OrderEvent, number: int, qty: float, price: float, latency: float
    ) -> FillEvent:
        # "<order id>-<n>": a venue re-sending a fill re-sends its trade id, which
        # the lifecycle catches. A very long order id gets a UUID to stay in bounds.
        order_id = order.order_id
        trade_id = f"{order_id}-{number}" if len(order_id) <= _ID_ROOM else str(uuid.uuid4())
        return FillEvent(
            order_id=order_id,
            symbol=order.symbol,
            executed_quantity=qty,
            executed_price=price,
            commission=self._commission * qty,
            commission_asset=COMMISSION_ASSET,
            exchange=EXCHANGE,
            trade_id=trade_id,
            side=order.side,
            source=self.source,
            metadata={"latency_ms": latency, "fill_number": number},
        )

    def _reject(self, order: OrderEvent, code: str, reason: str, latency: float) -> OrderEvent:
        self.rejected += 1
        return self._status(
            order, OrderStatus.REJECTED, latency, {"reason": reason, "reason_code": code}
        )

    def _status(
        self, order: OrderEvent, status: OrderStatus, latency: float, extra: dict[str, Any]
    ) -> OrderEvent:
        return OrderEvent(
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            order_type=order.order_type,
            price=order.price,
            stop_price=order.stop_price,
            status=status,
            strategy_id=order.strategy_id,
            time_in_force=order.time_in_force,
            source=self.source,
            metadata={"latency_ms": latency, **extra},
        )

    def _remember(self, order_id: str) -> None:
        seen = self._seen
        seen[order_id] = None
        if len(seen) > _SEEN_ORDERS:
            del seen[next(iter(seen))]
