"""The demo desk: strategy, risk, venue, order table and positions as bus subscribers.

A worker loads it with ``SILVERTINE_HANDLERS=silvertine_streams.demo.desk:setup``.
Market data feeds the moving-average strategy; its signals pass the risk check;
orders go to the simulated venue; the venue's answers update the order
lifecycle table and the positions, and go back on the bus. Events the table
refuses (illegal transitions, over-fills) go to the DLQ. The desk's state is
written to the Redis key ``demo:desk`` (JSON) for the live view and tests.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import deque
from typing import Any

from silvertine_streams.demo.trading import (
    MovingAverageCrossover,
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
    encode_event,
)
from silvertine_streams.handlers import HandlerPriority, HandlerRegistry
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.redis.clients import redis_client
from silvertine_streams.settings import Settings, load_settings
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink

log = logging.getLogger(__name__)

DESK_KEY = "demo:desk"
"""Redis key of the desk's JSON snapshot."""

RISK_SOURCE = "demo-risk"
OVER_FILL_EVERY = 5
"""Twice in every n orders the desk sends the table a fill it must refuse."""


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
        self.strategy = MovingAverageCrossover(fast=5, slow=20)
        self.risk = RiskCheck(
            RiskLimits(max_position=1_000, max_notional=250_000, max_orders_per_s=5,
                       default_qty=100),
            self.positions,
            order_id_prefix=f"ord-{int(time.time())}-",
            source=RISK_SOURCE,
        )
        self.venue = SimulatedVenue(seed=seed)
        self.lifecycle = OrderLifecycle()
        self.last_orders: deque[dict[str, Any]] = deque(maxlen=8)
        self.orders_seen = 0
        self._written_at = 0.0

    async def on_tick(self, tick: MarketDataEvent) -> None:
        """Mark positions, quote the venue, and publish the strategy's signal, if any."""
        self.positions.on_tick(tick)
        self.venue.on_tick(tick)
        signal = self.strategy.on_tick(tick)
        if signal is not None:
            await self._publisher.publish(signal)
        if time.monotonic() - self._written_at > 0.5:
            await self.write_snapshot()

    async def on_signal(self, signal: SignalEvent) -> None:
        """Turn a signal into an order within limits, or a ``risk_rejected`` system event."""
        decision = self.risk.on_signal(signal)
        if decision is not None:
            await self._publisher.publish(decision)

    async def on_order(self, order: OrderEvent) -> None:
        """Send a new order to the venue; apply and publish what comes back."""
        if order.status is not OrderStatus.PENDING or order.source != RISK_SOURCE:
            return  # the venue's own status updates coming back on the bus
        self.orders_seen += 1
        answers: list[Event] = [order, *self.venue.on_order(order)]
        fills = [e for e in answers if isinstance(e, FillEvent)]
        if fills:
            answers = self._inject_bad_fill(answers, fills[-1])
        for event in answers:
            outcome = self.lifecycle.apply(event)  # type: ignore[arg-type]  # orders and fills
            if isinstance(outcome, Transition):
                if event is not order:
                    await self._publisher.publish(event)
                if isinstance(event, FillEvent):
                    self.positions.on_fill(event, order.side)
            elif outcome.code is not RejectCode.DUPLICATE_EVENT:
                await self._dead_letters.write([DeadLetter(
                    encode_event(event), outcome.dlq_reason, "demo-desk/lifecycle")])
        state = self.lifecycle.get(order.order_id)
        if state is not None:
            self.last_orders.append({
                "order_id": state.order_id, "symbol": state.symbol, "side": state.side.value,
                "qty": state.quantity, "price": state.price, "status": state.status.value,
                "filled": state.filled_qty,
            })
        await self.write_snapshot()

    def _inject_bad_fill(self, answers: list[Event], last: FillEvent) -> list[Event]:
        """Now and then add a fill the order table must refuse (shown in the DLQ).

        Every ``OVER_FILL_EVERY`` orders: one over-fill (more than the order's
        remaining quantity, before its last fill) and one fill for an order that is
        already filled (an illegal transition, after its last fill).
        """
        position = self.orders_seen % OVER_FILL_EVERY
        if position not in (2, 4):
            return answers
        bad = last.with_changes(trade_id=f"{last.trade_id}-bad", event_id=str(uuid.uuid4()),
                                executed_quantity=last.executed_quantity + 1)
        if position == 2:
            index = answers.index(last)
            return [*answers[:index], bad, *answers[index:]]
        return [*answers, bad]

    async def write_snapshot(self) -> None:
        """Write the desk's state to ``demo:desk`` for the live view and tests."""
        self._written_at = time.monotonic()
        totals = self.positions.totals()
        snapshot = {
            "positions": [p._asdict() for p in self.positions.snapshot().values()],
            "totals": {"realized": totals.realized_pnl, "unrealized": totals.unrealized_pnl,
                       "commission": totals.commission, "net": totals.net_pnl},
            "order_status": {s.value: n for s, n in self.lifecycle.status_counts().items()},
            "filled_by_order": {oid: s.filled_qty
                                for oid, s in self.lifecycle.snapshot().items()},
            "table_rejections": dict(self.lifecycle.rejections),
            "risk_refused": dict(self.risk.refused),
            "last_orders": list(self.last_orders),
        }
        await self._redis.set(DESK_KEY, json.dumps(snapshot, default=str))


def setup(bus: HandlerRegistry) -> None:
    """Subscribe the desk: strategy on market data, risk on signals, venue on orders."""
    # The worker runs with its settings (URLs included) in its environment.
    desk = Desk(load_settings())
    bus.subscribe(desk.on_tick, ["market_data"], priority=HandlerPriority.NORMAL,
                  name="desk.strategy")
    bus.subscribe(desk.on_signal, ["signal"], priority=HandlerPriority.HIGH, name="desk.risk")
    bus.subscribe(desk.on_order, ["order"], priority=HandlerPriority.CRITICAL,
                  name="desk.venue")

