"""Pre-trade risk: turn a signal into a limit order, or refuse it and say why.

A refusal is a ``SystemEvent`` with ``kind="risk_rejected"``, severity
warning, the signal's symbol, a sentence in ``message`` and
``details["reason_code"]`` one of :data:`REASON_CODES`:

* ``max_position`` — the position after the order would exceed the limit;
* ``max_notional`` — its value at the order's price would exceed the limit;
* ``max_order_rate`` — the order-rate token bucket is empty;
* ``no_price`` — the signal has no ``target_price`` to put a limit on.

Limits are per symbol and count filled positions only (working orders are
not reserved against them: the demo's venue fills at once). An order that
shrinks the absolute position is never refused for size, even when the
position is already over a limit, because refusing it would keep the book
further from safe.

LONG signals buy and SHORT signals sell ``default_qty``; EXIT closes the
position (a sell of a long, a buy of a short, nothing when flat), which
shrinks it and so is refused only for the rate or a missing price; NEUTRAL
signals produce nothing.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from silvertine_streams.events import (
    OrderEvent,
    OrderSide,
    OrderStatus,
    OrderType,
    Severity,
    SignalEvent,
    SignalType,
    SystemEvent,
    TimeInForce,
)

__all__ = [
    "REASON_CODES",
    "RISK_REJECTED",
    "PositionSource",
    "RiskCheck",
    "RiskLimits",
    "TokenBucket",
]

RISK_REJECTED: Final = "risk_rejected"
"""``kind`` of the system event a refused signal becomes."""

REASON_CODES: Final = ("max_position", "max_notional", "max_order_rate", "no_price")
"""Every ``details["reason_code"]`` of a ``risk_rejected`` event."""


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits one :class:`RiskCheck` enforces.

    Attributes:
        max_position: largest absolute position per symbol, in units.
        max_notional: largest absolute position value per symbol, at the order price.
        max_orders_per_s: sustained order rate (the token bucket's refill rate).
        default_qty: quantity of every order.
        burst: orders allowed back to back (the bucket's size); by default
            one second's worth, at least 1.
    """

    max_position: float
    max_notional: float
    max_orders_per_s: float
    default_qty: float
    burst: float | None = None

    def __post_init__(self) -> None:
        values = (self.max_position, self.max_notional, self.max_orders_per_s, self.default_qty)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"risk limits must be positive and finite, got {self}")
        if self.burst is not None and not (math.isfinite(self.burst) and self.burst >= 1):
            raise ValueError(f"burst must be at least 1, got {self.burst}")


class TokenBucket:
    """Allow ``rate`` takes per second on average and ``capacity`` back to back.

    Starts full. The clock is injected; it must not go backwards.
    """

    __slots__ = ("rate", "capacity", "_now", "_tokens", "_stamp")

    def __init__(self, rate: float, capacity: float, now: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = capacity
        self._now = now
        self._tokens = capacity
        self._stamp = now()

    def take(self) -> bool:
        """Take one token if there is one; return whether there was."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Return seconds until a token is available (0.0 if one is now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)

    def _refill(self) -> None:
        now = self._now()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now


class PositionSource(Protocol):
    """What the risk check reads; :class:`~silvertine_streams.demo.trading.Positions` is one."""

    def quantity(self, symbol: str) -> float:
        """Return the signed position in ``symbol``."""
        ...


class RiskCheck:
    """Size, price and rate-limit each signal into a limit order, within the limits.

    Orders are ``LIMIT`` at the signal's ``target_price`` for
    ``limits.default_qty``, BUY for a LONG signal, SELL for a SHORT one (EXIT:
    the opposite of the position, for all of it), status PENDING,
    ``strategy_id`` from the signal and ``metadata["signal_id"]`` its event id.
    Order ids are ``f"{order_id_prefix}{n}"`` with ``n`` counting from 1:
    unique and deterministic per instance (give each run its own prefix if ids
    must not repeat across runs).

    Attributes:
        limits: the limits enforced.
        issued: orders produced.
        refused: refusals, by reason code.
    """

    __slots__ = (
        "limits",
        "issued",
        "refused",
        "_positions",
        "_bucket",
        "_prefix",
        "_source",
        "_tif",
    )

    def __init__(
        self,
        limits: RiskLimits,
        positions: PositionSource,
        now: Callable[[], float] = time.monotonic,
        order_id_prefix: str = "ord-",
        source: str = "demo-risk",
        time_in_force: TimeInForce = TimeInForce.DAY,
    ) -> None:
        self.limits = limits
        self.issued = 0
        self.refused: Counter[str] = Counter()
        self._positions = positions
        burst = limits.burst if limits.burst is not None else max(1.0, limits.max_orders_per_s)
        self._bucket = TokenBucket(limits.max_orders_per_s, burst, now)
        self._prefix = order_id_prefix
        self._source = source
        self._tif = time_in_force

    def on_signal(self, signal: SignalEvent) -> OrderEvent | SystemEvent | None:
        """Return the order ``signal`` leads to, the refusal, or None if it asks for none.

        NEUTRAL signals, and EXIT signals when the position is flat, ask for none.
        """
        signal_type = signal.signal_type
        if signal_type is SignalType.NEUTRAL:
            return None
        current = self._positions.quantity(signal.symbol)
        if signal_type is SignalType.EXIT:
            if current == 0.0:
                return None
            side = OrderSide.SELL if current > 0.0 else OrderSide.BUY
            qty = abs(current)
        else:
            side = OrderSide.BUY if signal_type is SignalType.LONG else OrderSide.SELL
            qty = self.limits.default_qty
        price = signal.target_price
        projected = current + qty if side is OrderSide.BUY else current - qty
        grows = abs(projected) > abs(current)
        facts: dict[str, Any] = {"position": current, "projected_position": projected}
        refusal = self._refusal(price, projected, grows, facts)
        if refusal is not None:
            return self._refuse(signal, side, qty, price, *refusal, facts)
        self.issued += 1
        assert price is not None  # _refusal refuses signals without one
        return OrderEvent(
            order_id=f"{self._prefix}{self.issued}",
            symbol=signal.symbol,
            side=side,
            quantity=qty,
            order_type=OrderType.LIMIT,
            price=price,
            status=OrderStatus.PENDING,
            strategy_id=signal.strategy_id,
            time_in_force=self._tif,
            source=self._source,
            metadata={"signal_id": signal.event_id},
        )

    def _refusal(
        self, price: float | None, projected: float, grows: bool, facts: dict[str, Any]
    ) -> tuple[str, str] | None:
        """Return ``(reason_code, why)`` if the order must be refused, adding to ``facts``."""
        limits = self.limits
        if price is None:
            return "no_price", "the signal has no target price to limit the order at"
        if grows and abs(projected) > limits.max_position:
            facts["limit"] = limits.max_position
            return "max_position", (
                f"the position would be {projected:g}, beyond the limit of ±{limits.max_position:g}"
            )
        notional = abs(projected) * price
        if grows and notional > limits.max_notional:
            facts.update(limit=limits.max_notional, projected_notional=notional)
            return "max_notional", (
                f"the position would be worth {notional:,.2f}, beyond the limit of "
                f"{limits.max_notional:,.2f}"
            )
        # Last, so a refusal for size does not use up the rate.
        if not self._bucket.take():
            facts.update(limit=limits.max_orders_per_s, retry_after_s=self._bucket.wait_s())
            return "max_order_rate", f"more than {limits.max_orders_per_s:g} orders per second"
        return None

    def _refuse(
        self,
        signal: SignalEvent,
        side: OrderSide,
        qty: float,
        price: float | None,
        code: str,
        why: str,
        facts: dict[str, Any],
    ) -> SystemEvent:
        self.refused[code] += 1
        at = "" if price is None else f" @ {price:g}"
        return SystemEvent(
            kind=RISK_REJECTED,
            severity=Severity.WARNING,
            message=f"refused {side.value} {qty:g} {signal.symbol}{at} for "
            f"{signal.strategy_id}: {why}",
            details={
                "reason_code": code,
                "signal_id": signal.event_id,
                "strategy_id": signal.strategy_id,
                "side": side.value,
                "quantity": qty,
                "price": price,
                **facts,
            },
            symbol=signal.symbol,
            source=self._source,
        )
