"""Handlers a test worker loads with ``SILVERTINE_HANDLERS=tests.handler_fixtures:setup``.

One records what it sees in the Redis stream ``test:handled``, one always
raises, one never returns: the test checks that the last two are timed out and
circuit-broken while the recorder and the log keep up.
``tests.handler_fixtures:record_market_data`` subscribes only a recorder that
takes a little longer, as one that calls a venue or a database would, to market
data (the graceful-stop test counts every call, and its stop must land while
handlers run).
"""

from __future__ import annotations

import asyncio
import os

import redis.asyncio as aioredis

from silvertine_streams.events import Event
from silvertine_streams.handlers import HandlerPriority, HandlerRegistry

SEEN_STREAM = "test:handled"

_redis: aioredis.Redis | None = None


async def record(event: Event) -> None:
    """Append the event id to ``test:handled``."""
    global _redis
    if _redis is None:
        # Test code may read the environment; the engine's modules never do.
        _redis = aioredis.Redis.from_url(os.environ["SILVERTINE_REDIS_URL"])
    await _redis.xadd(SEEN_STREAM, {"event_id": event.event_id})


def explode(event: Event) -> None:
    """Fail on every event."""
    raise RuntimeError(f"explode handler refuses {event.event_id}")


async def hang(event: Event) -> None:
    """Never return."""
    await asyncio.Event().wait()


def setup(bus: HandlerRegistry) -> None:
    """Subscribe the three handlers to orders, the hanging one first in line."""
    bus.subscribe(hang, ["order"], priority=HandlerPriority.CRITICAL, name="hang")
    bus.subscribe(explode, ["order"], priority=HandlerPriority.HIGH, name="explode")
    bus.subscribe(record, ["order"], priority=HandlerPriority.NORMAL, name="record")


async def record_slowly(event: Event) -> None:
    """Record the event id, taking about a millisecond (a handler doing some I/O)."""
    await asyncio.sleep(0.0005)
    await record(event)


def record_market_data(bus: HandlerRegistry) -> None:
    """Subscribe only the slower recorder, to market data."""
    bus.subscribe(record_slowly, ["market_data"], priority=HandlerPriority.NORMAL,
                  name="record")
