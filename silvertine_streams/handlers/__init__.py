"""Handlers: the registry users subscribe on, isolated dispatch by priority, the in-process bus.

Example::

    from silvertine_streams.handlers import HandlerPriority

    def setup(bus):                      # SILVERTINE_HANDLERS=my_risk.handlers:setup
        bus.subscribe(check_risk, ["order"], priority=HandlerPriority.CRITICAL)
"""

from __future__ import annotations

from silvertine_streams.handlers.bus import BusMetrics, EventBus
from silvertine_streams.handlers.dispatch import (
    CircuitTransitionCallback,
    DispatchReport,
    HandlerDispatcher,
    HandlerStats,
)
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
    "EventBus",
    "Handler",
    "HandlerDispatcher",
    "HandlerPriority",
    "HandlerRegistry",
    "HandlerSetup",
    "HandlerStats",
    "Subscription",
    "load_handler_setups",
]
