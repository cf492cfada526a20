"""Handlers a test worker loads with ``SILVERTINE_HANDLERS=tests.handler_fixtures:<setup>``.

``setup``: one records what it sees in the Redis stream ``test:handled``, one
always raises, one never returns: the test checks that the last two are timed
out and circuit-broken while the recorder and the log keep up.

``setup_recorders``: what the kill -9 tests check handlers against. A plain
recorder appends every market-data and order event it is given to
``test:seen`` (at least once: a redelivery shows up twice), and an idempotent
counter adds 1 per order to ``test:once`` through its ``Effects`` (exactly
once in effect: every count must end at 1).

``record_market_data`` subscribes only a recorder that
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
from silvertine_streams.handlers.effects import Effects

SEEN_STREAM = "test:handled"
RECORDED_STREAM = "test:seen"
ONCE_HASH = "test:once"

_redis: aioredis.Redis | None = None


def _client() -> aioredis.Redis:
    global _redis
    if _redis is None:
        # Test code may read the environment; the engine's modules never do.
        _redis = aioredis.Redis.from_url(os.environ["SILVERTINE_REDIS_URL"])
    return _redis


async def record(event: Event) -> None:
    """Append the event id to ``test:handled``."""
    await _client().xadd(SEEN_STREAM, {"event_id": event.event_id})


async def record_seen(event: Event) -> None:
    """Append the event's id, type, key and sequence to ``test:seen``."""
    await _client().xadd(RECORDED_STREAM, {
        "event_id": event.event_id, "type": event.event_type.value,
        "key": event.partition_key, "sequence": event.sequence or 0})


def count_once(event: Event, effects: Effects) -> None:
    """Stage ``HINCRBY test:once <event id> 1``: committed with the record of the call."""
    effects.call("HINCRBY", ONCE_HASH, event.event_id, 1)


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


def setup_recorders(bus: HandlerRegistry) -> None:
    """Subscribe the at-least-once recorder and the exactly-once counter."""
    bus.subscribe(record_seen, ["market_data", "order"], name="recorder")
    bus.subscribe(count_once, ["order"], name="once", idempotent=True)


COUNTED: list[str] = []
"""Event ids ``count_market_data`` saw, in this process (needs no Redis of its own)."""


def count_market_data(bus: HandlerRegistry) -> None:
    """Subscribe an in-memory counter to market data (a handler group with no I/O of its own)."""
    bus.subscribe(lambda event: COUNTED.append(event.event_id), ["market_data"], name="count")
