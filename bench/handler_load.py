"""Handlers the bench's workers load (``SILVERTINE_HANDLERS``).

``setup``: the ``handlers`` variant of ``pipeline_throughput``; ``setup_soak``: the
soak (``bench/soak.py``), which adds a per-type counter on every type it produces.

One plain handler on market data that keeps a last price and a tick count per
symbol in memory — work a strategy's first step does — so the variant measures
what following the log costs (the consumer-group reads, the dispatch, the
acknowledgements that make the handler group's position durable), not a
handler's own I/O.
"""

from __future__ import annotations

from typing import Any

from silvertine_streams.handlers import HandlerPriority, HandlerRegistry

last_price: dict[str, float] = {}
ticks: dict[str, int] = {}


def on_tick(event: Any) -> None:
    """Remember the tick's price and count it."""
    symbol = event.symbol
    last_price[symbol] = event.price
    ticks[symbol] = ticks.get(symbol, 0) + 1


def setup(bus: HandlerRegistry) -> None:
    """Subscribe the handler to market data."""
    bus.subscribe(on_tick, ["market_data"], priority=HandlerPriority.NORMAL, name="bench.ticks")


counts: dict[str, int] = {}


def on_event(event: Any) -> None:
    """Count the event by type (bounded state: one counter per type)."""
    kind = event.event_type.value
    counts[kind] = counts.get(kind, 0) + 1


def setup_soak(bus: HandlerRegistry) -> None:
    """The soak's handlers (``bench/soak.py``): the tick handler on market data and a
    counter on every type the soak produces, so each type's log is followed."""
    setup(bus)
    bus.subscribe(on_event, ["market_data", "signal", "order", "fill"],
                  priority=HandlerPriority.NORMAL, name="bench.counts")
