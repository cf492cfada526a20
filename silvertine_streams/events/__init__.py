"""Events: the public event model and its wire codec (pure, no I/O).

Import everything from here::

    from silvertine_streams.events import MarketDataEvent, decode_message
"""

from __future__ import annotations

from silvertine_streams.events.codec import (
    DecodedMessage,
    Rejected,
    content_fingerprint,
    decode_event,
    decode_message,
    encode_batch,
    encode_event,
)
from silvertine_streams.events.identity import fill_missing_identity
from silvertine_streams.events.model import (
    EVENT_CLASSES,
    Event,
    EventPriority,
    EventType,
    EventUnion,
    FillEvent,
    MarketDataEvent,
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
    "EVENT_CLASSES",
    "DecodedMessage",
    "Event",
    "EventPriority",
    "EventType",
    "EventUnion",
    "FillEvent",
    "MarketDataEvent",
    "OrderEvent",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "Rejected",
    "Severity",
    "SignalEvent",
    "SignalType",
    "SystemEvent",
    "TimeInForce",
    "content_fingerprint",
    "decode_event",
    "decode_message",
    "encode_batch",
    "encode_event",
    "fill_missing_identity",
]
