"""The enumerations events carry: their type tag, priority, and field vocabularies.

Each is a ``StrEnum`` (an ``IntEnum`` for priority) whose values are the wire form.
"""

from __future__ import annotations

import enum


class EventType(enum.StrEnum):
    """The kind of an event; also its ``event_type`` tag on the wire."""

    MARKET_DATA = "market_data"
    ORDER = "order"
    FILL = "fill"
    SIGNAL = "signal"
    SYSTEM = "system"


class EventPriority(enum.IntEnum):
    """Handling priority of an event type; lower is more urgent."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


class OrderSide(enum.StrEnum):
    """Direction of an order or fill."""

    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    """How an order is priced."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class OrderStatus(enum.StrEnum):
    """Where an order is in its lifecycle."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class SignalType(enum.StrEnum):
    """The position a strategy recommends (the platform contract's four values)."""

    LONG = "long"
    """Hold a long position."""
    SHORT = "short"
    """Hold a short position."""
    EXIT = "exit"
    """Close the position, whichever way it is."""
    NEUTRAL = "neutral"
    """No view: do nothing."""


class TimeInForce(enum.StrEnum):
    """How long an order stays working."""

    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class Severity(enum.StrEnum):
    """How serious a system event is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
