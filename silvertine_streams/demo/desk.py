"""The demo desk: strategy, risk, venue, and a book of positions and orders, as bus subscribers.

A worker loads it with ``SILVERTINE_HANDLERS=silvertine_streams.demo.desk:setup``.
Market data feeds the moving-average strategy; its signals pass the risk check;
new orders go to the simulated venue, which checks its own answers against an
order lifecycle table (refused ones — injected over-fills and illegal
transitions — go to the DLQ) and publishes the rest. The **book** follows what
was *logged*: positions from the logged fills, order states from the logged
order events and fills.

Exactly once in effect across ``kill -9`` (DESIGN §3.6):

* The book's handlers are idempotent (``subscribe(..., idempotent=True)``):
  each logged order event and fill changes the book once. What they change is
  staged on their ``Effects`` and committed with the handler group's record of
  the call: the applied events (``demo:desk:fills``, ``demo:desk:order-events``,
  from which :meth:`Desk.restore` rebuilds the book on every takeover), each
  symbol's position (``demo:desk:positions``, signed quantity), each order's
  reported status and quantity (``demo:desk:order-states``, JSON) and filled
  quantity (``demo:desk:filled``). So positions always equal the sum of the
  logged fills, and order states the logged order lifecycle. The order and
  fill logs are followed independently, so each view has one writer (or adds
  up): the fill handler never rewrites what the order handler wrote.
* What the desk publishes in answer to an event has an id derived from that
  event (and a timestamp from it): answered again after a crash, the answer is
  the same event and the canonical log keeps one. The venue is seeded per order,
  so its answers to an order are the same each time.

The desk's live view is the JSON snapshot ``demo:desk``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, deque
from datetime import timedelta

from silvertine_streams.demo.trading import (
    MovingAverageCrossover,
    OrderBook,
    OrderLifecycle,
    Positions,
    RejectCode,
    RiskCheck,
    RiskLimits,
    SimulatedVenue,
    Transition,
)
from silvertine_streams.events import (
    Event,
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderStatus,
    SignalEvent,
    decode_event,
    encode_event,
)
from silvertine_streams.handlers import HandlerPriority, HandlerRegistry
from silvertine_streams.handlers.effects import Effects, derived_id
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.redis.clients import redis_client
from silvertine_streams.settings import Settings, load_settings
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink

log = logging.getLogger(__name__)

DESK_KEY = "demo:desk"
"""Redis key of the desk's JSON snapshot (the live view)."""
BOOK_FILLS = "demo:desk:fills"
"""List of the fills the book applied (event JSON), in the order applied."""
BOOK_ORDER_EVENTS = "demo:desk:order-events"
"""List of the order events the book applied (event JSON), in the order applied."""
POSITIONS_KEY = "demo:desk:positions"
"""Hash ``symbol -> signed position`` (text), as the book holds it."""
ORDER_STATES_KEY = "demo:desk:order-states"
"""Hash ``order_id -> {"reported", "quantity"}`` (JSON): what the order's logged events say."""
FILLED_KEY = "demo:desk:filled"
"""Hash ``order_id -> filled quantity``: the sum of the order's logged fills.

An order's status is :func:`~silvertine_streams.demo.trading.order_status` of both."""

RISK_SOURCE = "demo-risk"
OVER_FILL_EVERY = 5
"""Twice in every n orders (chosen by order id) the venue makes a fill its table must refuse."""


class Desk:
    """The trading components of the demo, wired to the bus."""

    def __init__(self, settings: Settings, seed: int = 7) -> None:
        # The desk's own publishing must never wait for the engine it runs in.
        self._publisher = Publisher(
            settings.model_copy(update={"publish_max_lag": 0, "publish_max_backlog": 0})
        )
        self._redis = redis_client(settings, role="demo-desk")
        self._dead_letters = DeadLetterSink(self._redis)
        self.positions = Positions()
        self.book = OrderBook()
        self.strategy = MovingAverageCrossover(fast=5, slow=20)
        self.risk = RiskCheck(
            RiskLimits(max_position=1_000, max_notional=250_000, max_orders_per_s=5,
                       default_qty=100),
            self,  # reads the book's positions, whatever restore() rebuilt
            order_id_prefix="ord-",
            source=RISK_SOURCE,
        )
        self.venue = SimulatedVenue(seed=seed, seed_per_order=True)
        self.venue_rejections: Counter[str] = Counter()
        self.last_orders: deque[str] = deque(maxlen=8)
        self._written_at = 0.0

    def quantity(self, symbol: str) -> float:
        """Return the book's signed position in ``symbol`` (what the risk check reads)."""
        return self.positions.quantity(symbol)

    async def restore(self) -> None:
        """Rebuild the book from what its idempotent handlers committed (on each takeover)."""
        positions, book = Positions(), OrderBook()
        for raw in await self._redis.lrange(BOOK_ORDER_EVENTS, 0, -1):
            event = decode_event(_bytes(raw))
            if isinstance(event, OrderEvent):
                book.apply_order(event)
        for raw in await self._redis.lrange(BOOK_FILLS, 0, -1):
            event = decode_event(_bytes(raw))
            if isinstance(event, FillEvent):
                positions.on_fill(event, event.side or book.side_of(event.order_id))
                book.apply_fill(event)
        self.positions, self.book = positions, book
        log.info("desk book restored: %s orders, %s symbols", len(book),
                 len(positions.snapshot()))

    # --- strategy, risk, venue: they publish, with ids derived from what they answer ---

    async def on_tick(self, tick: MarketDataEvent) -> None:
        """Mark positions, quote the venue, and publish the strategy's signal, if any."""
        self.positions.on_tick(tick)
        self.venue.on_tick(tick)
        signal = self.strategy.on_tick(tick)
        if signal is not None:
            await self._publisher.publish(answer(signal, tick, "signal"))
        if time.monotonic() - self._written_at > 0.5:
            await self.write_snapshot()

    async def on_signal(self, signal: SignalEvent, effects: Effects) -> None:
        """Turn a signal into an order within limits, or a ``risk_rejected`` system event."""
        decision = self.risk.on_signal(signal)
        if decision is not None:
            if isinstance(decision, OrderEvent):
                decision = decision.with_changes(
                    order_id=f"ord-{derived_id(signal.event_id, 'order-id')[:13]}")
            await self._publisher.publish(answer(decision, signal, "risk"))

    async def on_new_order(self, order: OrderEvent, effects: Effects) -> None:
        """Send a new order to the venue; publish the answers its table accepts."""
        if order.status is not OrderStatus.PENDING or order.source != RISK_SOURCE:
            return  # the venue's own status updates coming back on the bus
        answers: list[Event] = []
        for number, made in enumerate(self.venue.on_order(order), 1):
            latency_ms = float(made.metadata.get("latency_ms", 0.0))
            answers.append(answer(made, order, "venue", number,
                                  after=timedelta(milliseconds=latency_ms)))
        fills = [e for e in answers if isinstance(e, FillEvent)]
        if fills:
            answers = self._inject_bad_fill(order, answers, fills[-1])
        table = OrderLifecycle()  # the venue's own check of its answers to this order
        table.apply(order)
        for event in answers:
            assert isinstance(event, OrderEvent | FillEvent)  # what a venue answers
            outcome = table.apply(event)
            if isinstance(outcome, Transition):
                await self._publisher.publish(event)
            elif outcome.code is not RejectCode.DUPLICATE_EVENT:
                self.venue_rejections[outcome.code.value] += 1
                await self._dead_letters.write([DeadLetter(
                    encode_event(event), outcome.dlq_reason, "demo-desk/venue")])

    def _inject_bad_fill(self, order: OrderEvent, answers: list[Event],
                         last: FillEvent) -> list[Event]:
        """For some orders add a fill the venue's table must refuse (shown in the DLQ).

        Chosen by order id (the same choice whenever the order is answered): one
        over-fill (more than the order's remaining quantity, before its last
        fill) or one fill for an order already filled (an illegal transition).
        """
        position = int(hashlib.blake2b(order.order_id.encode(), digest_size=4).hexdigest(),
                       16) % OVER_FILL_EVERY
        if position not in (2, 4):
            return answers
        bad = last.with_changes(trade_id=f"{last.trade_id}-bad",
                                event_id=derived_id(order.event_id, "bad-fill"),
                                executed_quantity=last.executed_quantity + 1)
        if position == 2:
            index = answers.index(last)
            return [*answers[:index], bad, *answers[index:]]
        return [*answers, bad]

    # --- the book: idempotent, every change staged with the record of the call ---------

    async def on_order_event(self, order: OrderEvent, effects: Effects) -> None:
        """Apply a logged order event to the book."""
        self.book.apply_order(order)
        effects.rpush(BOOK_ORDER_EVENTS, encode_event(order))
        booked = self.book.get(order.order_id)
        if booked is not None and booked.reported is not None:
            effects.hset(ORDER_STATES_KEY, {order.order_id: json.dumps(
                {"reported": booked.reported.value, "quantity": booked.quantity})})
        if order.status is OrderStatus.PENDING:
            self.last_orders.append(order.order_id)
        await self.write_snapshot()

    async def on_fill(self, fill: FillEvent, effects: Effects) -> None:
        """Apply a logged fill to the positions and the book.

        Raises:
            ValueError: neither the fill nor the book knows its side (nothing changes).
        """
        side = fill.side or self.book.side_of(fill.order_id)
        position = self.positions.on_fill(fill, side)
        self.book.apply_fill(fill)
        effects.rpush(BOOK_FILLS, encode_event(fill))
        effects.hset(POSITIONS_KEY, {fill.symbol: repr(position.quantity)})
        effects.hincrbyfloat(FILLED_KEY, fill.order_id, fill.executed_quantity)
        await self.write_snapshot()

    async def write_snapshot(self) -> None:
        """Write the desk's state to ``demo:desk`` for the live view and tests."""
        self._written_at = time.monotonic()
        totals = self.positions.totals()
        orders = self.book.snapshot()
        last_orders = []
        for order_id in self.last_orders:
            booked = orders.get(order_id)
            if booked is not None:
                last_orders.append({
                    "order_id": order_id, "symbol": booked.symbol,
                    "side": booked.side.value if booked.side else "", "qty": booked.quantity,
                    "price": None, "status": booked.status.value if booked.status else "",
                    "filled": booked.filled_qty})
        snapshot = {
            "positions": [p._asdict() for p in self.positions.snapshot().values()],
            "totals": {"realized": totals.realized_pnl, "unrealized": totals.unrealized_pnl,
                       "commission": totals.commission, "net": totals.net_pnl},
            "order_status": {s.value: n for s, n in self.book.status_counts().items()},
            "filled_by_order": {oid: o.filled_qty for oid, o in orders.items()},
            "table_rejections": dict(self.venue_rejections + self.book.refused),
            "risk_refused": dict(self.risk.refused),
            "last_orders": last_orders,
        }
        await self._redis.set(DESK_KEY, json.dumps(snapshot, default=str))


def answer(event: Event, cause: Event, *parts: object,
           after: timedelta = timedelta(0)) -> Event:
    """Give ``event``, made in answer to ``cause``, an id and a timestamp derived from it.

    The same answer to the same cause is then the same event, which the
    canonical log keeps once however often a crash makes the desk answer again.
    """
    return event.with_changes(event_id=derived_id(cause.event_id, *parts),
                              timestamp=cause.timestamp + after)


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def setup(bus: HandlerRegistry) -> None:
    """Subscribe the desk: strategy, risk, venue, and the book (idempotent)."""
    # The worker runs with its settings (URLs included) in its environment.
    desk = Desk(load_settings())
    bus.on_resume(desk.restore)
    bus.subscribe(desk.on_tick, ["market_data"], priority=HandlerPriority.NORMAL,
                  name="desk.strategy")
    bus.subscribe(desk.on_signal, ["signal"], priority=HandlerPriority.HIGH, name="desk.risk",
                  idempotent=True)
    bus.subscribe(desk.on_new_order, ["order"], priority=HandlerPriority.CRITICAL,
                  name="desk.venue", idempotent=True)
    bus.subscribe(desk.on_order_event, ["order"], priority=HandlerPriority.HIGH,
                  name="desk.book.orders", idempotent=True)
    bus.subscribe(desk.on_fill, ["fill"], priority=HandlerPriority.HIGH,
                  name="desk.book.fills", idempotent=True)

