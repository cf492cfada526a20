"""Handlers: the registry users subscribe on, isolated dispatch by priority, the in-process bus.

A worker runs them in the app's handler group, which follows the canonical
logs from a durable cursor (:mod:`.group`). Example::

    from silvertine_streams.handlers import HandlerPriority

    def setup(bus):                      # SILVERTINE_HANDLERS=my_risk.handlers:setup
        bus.subscribe(check_risk, ["order"], priority=HandlerPriority.CRITICAL)
        bus.subscribe(book_fill, ["fill"], name="book", idempotent=True)  # (event, effects)
"""

from __future__ import annotations

from silvertine_streams.handlers.bus import BusMetrics, EventBus
from silvertine_streams.handlers.dispatch import (
    CircuitTransitionCallback,
    DispatchReport,
    HandlerDispatcher,
    HandlerStats,
)
from silvertine_streams.handlers.effects import Effects, derived_id
from silvertine_streams.handlers.registry import (
    Handler,
    HandlerPriority,
    HandlerRegistry,
    Subscription,
)
from silvertine_streams.handlers.setups import HandlerSetup, load_handler_setups

__all__ = [
    "BusMetrics",
    "CircuitTransitionCallback",
    "DispatchReport",
    "Effects",
    "EventBus",
    "Handler",
    "HandlerDispatcher",
    "HandlerPriority",
    "HandlerRegistry",
    "HandlerSetup",
    "HandlerStats",
    "Subscription",
    "derived_id",
    "load_handler_setups",
]
