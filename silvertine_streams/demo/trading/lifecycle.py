"""The order lifecycle table: which order events are legal, and the state they leave.

States and the events that move them::

    (new) --OrderEvent PENDING--> PENDING
    PENDING --OrderEvent SUBMITTED--> SUBMITTED
    PENDING, SUBMITTED --OrderEvent REJECTED--> REJECTED
    PENDING, SUBMITTED, PARTIALLY_FILLED --OrderEvent CANCELLED--> CANCELLED
    SUBMITTED, PARTIALLY_FILLED --FillEvent--> PARTIALLY_FILLED or FILLED

FILLED, CANCELLED and REJECTED are final. PARTIALLY_FILLED and FILLED come
only from fills: an ``OrderEvent`` carrying either is refused, so the table
has one source of truth for filled quantity. Events must be applied in the
order their producers made them (the venue returns SUBMITTED before its
fills); a fill for an order still PENDING is refused.

:meth:`OrderLifecycle.apply` returns a :class:`Transition` for an accepted
event and a :class:`Rejection` (with a :class:`RejectCode` and a sentence) for
a refused one, leaving the table unchanged. A ``duplicate_event`` rejection is
a redelivery of an event already applied (same event id) and may be dropped;
every other rejection belongs in the DLQ (:attr:`Rejection.dlq_reason`).

A fill is known by :func:`fill_key`: its ``trade_id`` (the contract's business
key), else its ``fill_id``, else its event id. A fill that does not say its side
takes its order's.

Quantities compare with a relative tolerance of 1e-9 of the order quantity,
so fills that sum to the quantity up to float rounding fill the order, and
nothing beyond that tolerance can over-fill it.
"""

from __future__ import annotations

import enum
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from silvertine_streams.events import FillEvent, OrderEvent, OrderSide, OrderStatus

__all__ = [
    "FILL_STATES",
    "FINAL_STATES",
    "LEGAL_STATUS_CHANGES",
    "OrderLifecycle",
    "OrderSnapshot",
    "RejectCode",
    "Rejection",
    "Transition",
    "fill_key",
    "quantity_tolerance",
]

_S = OrderStatus

LEGAL_STATUS_CHANGES: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    _S.PENDING: frozenset({_S.SUBMITTED, _S.REJECTED, _S.CANCELLED}),
    _S.SUBMITTED: frozenset({_S.REJECTED, _S.CANCELLED}),
    _S.PARTIALLY_FILLED: frozenset({_S.CANCELLED}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
}
"""Status each status may move to through an ``OrderEvent`` (fills aside)."""

FILL_STATES: frozenset[OrderStatus] = frozenset({_S.SUBMITTED, _S.PARTIALLY_FILLED})
"""Statuses in which an order takes fills."""

FINAL_STATES: frozenset[OrderStatus] = frozenset({_S.FILLED, _S.CANCELLED, _S.REJECTED})
"""Statuses an order never leaves."""


def fill_key(fill: FillEvent) -> str:
    """Return the id that tells ``fill`` from other executions, redelivered or re-sent.

    The venue's ``trade_id`` when set, else the producer's ``fill_id``, else the
    event id (then only a redelivery of the same event is recognised).
    """
    return fill.trade_id or fill.fill_id or fill.event_id


def quantity_tolerance(quantity: float) -> float:
    """Return how far a filled quantity may stray from ``quantity`` and still equal it."""
    return 1e-9 * max(1.0, quantity)


class RejectCode(enum.StrEnum):
    """Why the lifecycle refused an event."""

    UNKNOWN_ORDER = "unknown_order"
    """A status change or fill for an order never seen PENDING."""
    DUPLICATE_ORDER = "duplicate_order"
    """A second PENDING for a known order id."""
    DUPLICATE_EVENT = "duplicate_event"
    """An event id already applied: a redelivery, safe to drop."""
    DUPLICATE_FILL = "duplicate_fill"
    """A new event re-reporting a fill (same :func:`fill_key`) already applied."""
    ILLEGAL_TRANSITION = "illegal_transition"
    """A status change not in the table, or a fill for an order not taking fills."""
    DERIVED_STATUS = "derived_status"
    """An ``OrderEvent`` claiming PARTIALLY_FILLED or FILLED, which only fills set."""
    OVER_FILL = "over_fill"
    """A fill that would take the filled quantity beyond the order quantity."""
    MISMATCH = "mismatch"
    """Symbol, side or quantity differ from the order's."""


class Transition(NamedTuple):
    """An accepted event and the state it left its order in.

    Attributes:
        order_id: the order.
        event: the event applied.
        before: status before, None for a new order.
        after: status after.
        filled_qty: quantity filled after the event.
        avg_price: average fill price after the event, None before any fill.
    """

    order_id: str
    event: OrderEvent | FillEvent
    before: OrderStatus | None
    after: OrderStatus
    filled_qty: float
    avg_price: float | None


class Rejection(NamedTuple):
    """A refused event; the table did not change.

    Attributes:
        order_id: the order the event names.
        event: the event refused.
        code: the kind of refusal.
        reason: what was wrong, as a sentence for a person.
    """

    order_id: str
    event: OrderEvent | FillEvent
    code: RejectCode
    reason: str

    @property
    def dlq_reason(self) -> str:
        """The reason in the DLQ's ``"<category>: <detail>"`` form."""
        return f"{self.code.value}: {self.reason}"


class OrderSnapshot(NamedTuple):
    """One order's state at one moment (for the live view and tests)."""

    order_id: str
    symbol: str
    side: OrderSide
    quantity: float
    price: float | None
    strategy_id: str
    status: OrderStatus
    filled_qty: float
    avg_price: float | None
    commission: float
    fills: int

    @property
    def remaining_qty(self) -> float:
        """Quantity still to fill (0.0 once filled, whatever the status)."""
        return max(0.0, self.quantity - self.filled_qty)


class _Order:
    __slots__ = (
        "order",
        "status",
        "filled",
        "notional",
        "commission",
        "fill_keys",
        "event_ids",
    )

    def __init__(self, order: OrderEvent) -> None:
        self.order = order
        self.status = _S.PENDING
        self.filled = 0.0
        self.notional = 0.0
        self.commission = 0.0
        self.fill_keys: set[str] = set()
        self.event_ids: set[str] = {order.event_id}

    def avg_price(self) -> float | None:
        return self.notional / self.filled if self.filled else None


class OrderLifecycle:
    """Every order's status, filled quantity, average price and commission.

    Orders are kept for the life of the object (the demo's runs are short).

    Attributes:
        rejections: refusals so far, by code.
    """

    __slots__ = ("_orders", "rejections")

    def __init__(self) -> None:
        self._orders: dict[str, _Order] = {}
        self.rejections: Counter[RejectCode] = Counter()

    def apply(self, event: OrderEvent | FillEvent) -> Transition | Rejection:
        """Apply an order status event or a fill if it is legal.

        Raises:
            TypeError: ``event`` is neither an ``OrderEvent`` nor a ``FillEvent``.
        """
        if isinstance(event, FillEvent):
            return self._apply_fill(event)
        if isinstance(event, OrderEvent):
            return self._apply_status(event)
        raise TypeError(f"the order lifecycle takes orders and fills, not {type(event).__name__}")

    def _apply_status(self, event: OrderEvent) -> Transition | Rejection:
        order_id, status = event.order_id, event.status
        state = self._orders.get(order_id)
        if state is None:
            if status is _S.PENDING:
                state = self._orders[order_id] = _Order(event)
                return Transition(order_id, event, None, _S.PENDING, 0.0, None)
            return self._reject(
                event,
                RejectCode.UNKNOWN_ORDER,
                f"{status.value} for order {order_id}, which was never placed",
            )
        if event.event_id in state.event_ids:
            return self._duplicate(event, state)
        if status is _S.PENDING:
            return self._reject(
                event,
                RejectCode.DUPLICATE_ORDER,
                f"order {order_id} was already placed (now {state.status.value})",
            )
        mismatch = _order_mismatch(state.order, event)
        if mismatch:
            return self._reject(
                event, RejectCode.MISMATCH, f"{status.value} for order {order_id} has {mismatch}"
            )
        if status is _S.PARTIALLY_FILLED or status is _S.FILLED:
            return self._reject(
                event,
                RejectCode.DERIVED_STATUS,
                f"{status.value} for order {order_id} was sent as an order "
                "event; fill states come only from fill events",
            )
        before = state.status
        if status not in LEGAL_STATUS_CHANGES[before]:
            return self._reject(
                event,
                RejectCode.ILLEGAL_TRANSITION,
                f"order {order_id} cannot go from {before.value} to {status.value}",
            )
        state.status = status
        state.event_ids.add(event.event_id)
        return Transition(order_id, event, before, status, state.filled, state.avg_price())

    def _apply_fill(self, fill: FillEvent) -> Transition | Rejection:
        order_id = fill.order_id
        key = fill_key(fill)
        state = self._orders.get(order_id)
        if state is None:
            return self._reject(
                fill,
                RejectCode.UNKNOWN_ORDER,
                f"fill {key} is for order {order_id}, which was never placed",
            )
        if fill.event_id in state.event_ids:
            return self._duplicate(fill, state)
        if key in state.fill_keys:
            return self._reject(
                fill,
                RejectCode.DUPLICATE_FILL,
                f"fill {key} of order {order_id} was already applied",
            )
        order = state.order
        side = order.side if fill.side is None else fill.side
        if fill.symbol != order.symbol or side is not order.side:
            return self._reject(
                fill,
                RejectCode.MISMATCH,
                f"fill {key} is {side.value} {fill.symbol} but "
                f"order {order_id} is {order.side.value} {order.symbol}",
            )
        before = state.status
        if before not in FILL_STATES:
            why = "has not been submitted yet" if before is _S.PENDING else "takes no more fills"
            return self._reject(
                fill,
                RejectCode.ILLEGAL_TRANSITION,
                f"fill {key} is for order {order_id}, which is {before.value} and {why}",
            )
        filled = state.filled + fill.executed_quantity
        tolerance = quantity_tolerance(order.quantity)
        if filled > order.quantity + tolerance:
            return self._reject(
                fill,
                RejectCode.OVER_FILL,
                f"fill {key} of {fill.executed_quantity:g} would bring "
                f"order {order_id} to {filled:g} filled, more than its "
                f"quantity {order.quantity:g}",
            )
        state.filled = filled
        state.notional += fill.executed_quantity * fill.executed_price
        state.commission += fill.commission
        state.fill_keys.add(key)
        state.event_ids.add(fill.event_id)
        after = _S.FILLED if filled >= order.quantity - tolerance else _S.PARTIALLY_FILLED
        state.status = after
        return Transition(order_id, fill, before, after, filled, state.avg_price())

    def _duplicate(self, event: OrderEvent | FillEvent, state: _Order) -> Rejection:
        return self._reject(
            event,
            RejectCode.DUPLICATE_EVENT,
            f"event {event.event_id} of order {state.order.order_id} was "
            "already applied (a redelivery)",
        )

    def _reject(self, event: OrderEvent | FillEvent, code: RejectCode, reason: str) -> Rejection:
        self.rejections[code] += 1
        return Rejection(event.order_id, event, code, reason)

    # --- reading ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def get(self, order_id: str) -> OrderSnapshot | None:
        """Return the order's state, or None if it was never placed."""
        state = self._orders.get(order_id)
        return None if state is None else _snapshot(state)

    def snapshot(self) -> dict[str, OrderSnapshot]:
        """Return every order's state, by order id, in the order they were placed."""
        return {order_id: _snapshot(state) for order_id, state in self._orders.items()}

    def status_counts(self) -> dict[OrderStatus, int]:
        """Return how many orders are in each status (every status listed)."""
        counts = dict.fromkeys(OrderStatus, 0)
        for state in self._orders.values():
            counts[state.status] += 1
        return counts

    def fill_discrepancies(self, fills: Iterable[FillEvent]) -> dict[str, tuple[float, float]]:
        """Compare the table's filled quantities with the sums of ``fills``.

        Args:
            fills: every fill logged (the accepted ones), e.g. read back from
                the canonical fill log.

        Returns:
            ``order_id -> (table filled qty, sum of fills)`` for every order
            where they differ beyond the tolerance, including orders known to
            only one side. Empty when consistent.
        """
        logged: defaultdict[str, list[float]] = defaultdict(list)
        for fill in fills:
            logged[fill.order_id].append(fill.executed_quantity)
        out: dict[str, tuple[float, float]] = {}
        for order_id in self._orders.keys() | logged.keys():
            state = self._orders.get(order_id)
            table = state.filled if state is not None else 0.0
            total = math.fsum(logged.get(order_id, ()))
            quantity = state.order.quantity if state is not None else total
            if state is None or abs(table - total) > quantity_tolerance(quantity):
                out[order_id] = (table, total)
        return out

    def consistent_with(self, fills: Iterable[FillEvent]) -> bool:
        """Return whether every order's filled quantity equals the sum of its ``fills``."""
        return not self.fill_discrepancies(fills)


def _order_mismatch(order: OrderEvent, update: OrderEvent) -> str:
    """Say how ``update`` disagrees with the order it updates, or return ``""``."""
    if update.symbol != order.symbol:
        return f"symbol {update.symbol}, not {order.symbol}"
    if update.side is not order.side:
        return f"side {update.side.value}, not {order.side.value}"
    if abs(update.quantity - order.quantity) > quantity_tolerance(order.quantity):
        return f"quantity {update.quantity:g}, not {order.quantity:g}"
    return ""


def _snapshot(state: _Order) -> OrderSnapshot:
    order = state.order
    return OrderSnapshot(
        order.order_id,
        order.symbol,
        order.side,
        order.quantity,
        order.price,
        order.strategy_id,
        state.status,
        state.filled,
        state.avg_price(),
        state.commission,
        len(state.fill_keys),
    )
