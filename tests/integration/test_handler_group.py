"""The handler group against a real redis-server: durable position, takeover, idempotence.

No worker and no Kafka here: events are appended to ``log:<type>`` with the
real canonical-log sink, and :class:`HandlerGroup` objects stand for the
workers of one app. A "crash" is a group task cancelled in the middle of a
batch without :meth:`HandlerGroup.stop` (nothing acknowledged, lease kept until
it expires), which is what ``kill -9`` leaves behind in Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from silvertine_streams.errors import LeaseLost
from silvertine_streams.events import Event, OrderEvent, OrderSide, encode_event
from silvertine_streams.handlers import HandlerDispatcher, HandlerRegistry
from silvertine_streams.handlers.effects import Effects
from silvertine_streams.handlers.group import HandlerGroup
from silvertine_streams.handlers.positions import GroupPosition
from silvertine_streams.observability.metrics import REGISTRY
from silvertine_streams.sinks import CanonicalLogSink, LogRecord
from silvertine_streams.topics import (
    handler_completions,
    handler_cursor,
    handler_group,
    handler_lease,
    handler_progress,
    log_stream,
)
from tests.helpers import async_wait_for

pytestmark = pytest.mark.integration

LEASE_MS = 400  # a dead holder's lease expires fast: takeovers in well under a second
SYMBOLS = ("AAPL", "MSFT", "TSLA")


def orders(count: int, symbols: Sequence[str] = SYMBOLS) -> list[Event]:
    """Orders round-robin over ``symbols``, each symbol's sequences 1, 2, ..."""
    return [OrderEvent(order_id=f"o-{i}", symbol=symbols[i % len(symbols)], side=OrderSide.BUY,
                       quantity=1.0 + i, source="oms", sequence=i // len(symbols) + 1)
            for i in range(count)]


async def log_events(redis: Redis, events: Sequence[Event]) -> None:
    """Append ``events`` to their canonical log with the real sink."""
    sink = CanonicalLogSink(redis, "order")
    await sink.write([LogRecord(e.event_id, e.event_id, encode_event(e), "test")
                      for e in events])


class Recorder:
    """A handler that records the ids it sees, and can be made to hang on one of them."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.symbols: dict[str, list[int]] = {}
        self.hang_on: str | None = None
        self.hanging = asyncio.Event()

    async def __call__(self, event: Any) -> None:
        self.seen.append(event.event_id)
        self.symbols.setdefault(event.symbol, []).append(event.sequence)
        if event.event_id == self.hang_on:
            self.hanging.set()
            await asyncio.Event().wait()  # a crash lands here


def make_group(redis: Redis, app_id: str, holder: str,
               setup: Callable[[HandlerRegistry], object], **kwargs: Any) -> HandlerGroup:
    registry = HandlerRegistry()
    setup(registry)
    dispatcher = HandlerDispatcher(registry, timeout_s=5.0)
    position = GroupPosition(redis, app_id, holder, lease_ms=LEASE_MS)
    return HandlerGroup(position, registry, dispatcher, ["order"], **kwargs)


@pytest.fixture
def app_id() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Group tasks of the test; whatever is still running at the end is cancelled."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def crash(task: asyncio.Task[None]) -> None:
    """End a group task as ``kill -9`` would: no acknowledgement, no lease release."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def finished(redis: Redis, app_id: str) -> int:
    """Log entries the group's cursor has passed."""
    return int(await redis.hget(handler_progress(app_id), "order") or 0)


async def wait_until(condition: Callable[[], bool], message: str, timeout: float = 10.0) -> None:
    """Poll a condition on the test's own state until it holds (or fail after ``timeout``)."""
    async def check() -> bool:
        return condition()
    await async_wait_for(check, timeout=timeout, message=message)


async def wait_acknowledged(redis: Redis, app_id: str, count: int) -> None:
    """Wait until the group's cursor has passed ``count`` entries."""
    async def done() -> bool:
        return await finished(redis, app_id) >= count
    await async_wait_for(done, timeout=10, message=f"the cursor past {count} entries")


async def test_every_logged_event_reaches_the_handlers_in_order_and_the_cursor_follows(
    redis_client: Redis, app_id: str, running: list[asyncio.Task[None]]
) -> None:
    events = orders(1200)
    await log_events(redis_client, events[:700])  # some before the group exists
    recorder = Recorder()
    group = make_group(redis_client, app_id, "w1",
                       lambda bus: bus.subscribe(recorder, ["order"], name="recorder"))
    running.append(asyncio.ensure_future(group.run()))
    await log_events(redis_client, events[700:])
    await wait_until(lambda: len(recorder.seen) >= len(events),
                     "the recorder to see every logged order", timeout=20)
    assert recorder.seen == [e.event_id for e in events]
    assert all(seqs == sorted(seqs) for seqs in recorder.symbols.values())

    await wait_acknowledged(redis_client, app_id, len(events))
    await group.update_lag()
    assert REGISTRY.get_sample_value(
        "silvertine_handler_lag", {"group": handler_group(app_id), "event_type": "order"}) == 0
    assert await group.stop(5.0)
    assert await redis_client.get(handler_lease(app_id)) is None  # released on a stop


async def test_a_command_redis_refuses_holds_the_group_back_without_ending_it(
    redis_client: Redis, app_id: str, running: list[asyncio.Task[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A key of the wrong type stands in for any refusal (NOPERM from an ACL, OOM).
    events = orders(5)
    await log_events(redis_client, events)
    await redis_client.set(handler_cursor(app_id), "not a hash")
    recorder = Recorder()
    caplog.set_level("ERROR", logger="silvertine_streams.handlers.group")
    group = make_group(redis_client, app_id, "w1",
                       lambda bus: bus.subscribe(recorder, ["order"], name="recorder"))
    task = asyncio.ensure_future(group.run())
    running.append(task)
    await wait_until(lambda: any("Redis refused a command" in r.getMessage()
                                 for r in caplog.records), "the refusal to be logged")
    assert recorder.seen == [] and not task.done()

    await redis_client.delete(handler_cursor(app_id))  # the operator fixed it
    await wait_until(lambda: len(recorder.seen) == len(events),
                     "the group to go on once Redis accepts", timeout=20)
    assert recorder.seen == [e.event_id for e in events]


async def test_a_crash_mid_batch_hands_the_unfinished_batch_to_the_next_holder_first(
    redis_client: Redis, app_id: str, running: list[asyncio.Task[None]]
) -> None:
    events = orders(90)
    await log_events(redis_client, events)
    first, second = Recorder(), Recorder()
    first.hang_on = events[40].event_id
    a = make_group(redis_client, app_id, "w1",
                   lambda bus: bus.subscribe(first, ["order"], name="recorder"))
    task_a = asyncio.ensure_future(a.run())
    running.append(task_a)
    await asyncio.wait_for(first.hanging.wait(), 10)
    await crash(task_a)
    assert await finished(redis_client, app_id) == 0  # one batch read, the cursor never moved

    b = make_group(redis_client, app_id, "w2",
                   lambda bus: bus.subscribe(second, ["order"], name="recorder"))
    running.append(asyncio.ensure_future(b.run()))
    later = orders(120)[90:]
    await log_events(redis_client, later)
    await wait_until(lambda: len(second.seen) >= 120,
                     "the next holder to run the lost batch and the new orders")
    # The unfinished batch again, whole and first, then what came after: nothing lost,
    # each symbol still in order.
    assert second.seen == [e.event_id for e in events + later]
    assert all(seqs == sorted(seqs) for seqs in second.symbols.values())
    await wait_acknowledged(redis_client, app_id, 120)


async def test_a_holder_that_lost_its_lease_cannot_move_the_cursor(
    redis_client: Redis, app_id: str
) -> None:
    events = orders(3)
    await log_events(redis_client, events)
    position = GroupPosition(redis_client, app_id, "stalled", lease_ms=LEASE_MS)
    assert await position.hold()
    batch = await position.read("order", await position.cursor("order"), 10, 10)
    assert [e.event_id for e in batch.events] == [e.event_id for e in events]
    await redis_client.set(handler_lease(app_id), "someone-else")  # took over meanwhile
    with pytest.raises(LeaseLost):
        await position.advance("order", batch)
    assert await position.cursor("order") == "0-0"  # left for the new holder to redo
    assert await finished(redis_client, app_id) == 0


async def test_entries_that_are_not_events_are_passed_over_and_the_rest_handled(
    redis_client: Redis, app_id: str
) -> None:
    events = orders(2)
    await log_events(redis_client, events[:1])
    await redis_client.xadd(log_stream("order"), {"note": "no event field"})
    await redis_client.xadd(log_stream("order"), {"event": "{not json"})
    await log_events(redis_client, events[1:])
    position = GroupPosition(redis_client, app_id, "w1", lease_ms=LEASE_MS)
    batch = await position.read("order", "0-0", 10, 10)
    assert [e.event_id for e in batch.events] == [e.event_id for e in events]
    assert batch.entries == 4 and len(batch.skipped) == 2


async def test_a_graceful_stop_hands_over_the_log_to_its_end_and_the_next_holder_repeats_nothing(
    redis_client: Redis, app_id: str, running: list[asyncio.Task[None]]
) -> None:
    events = orders(300)
    await log_events(redis_client, events)
    first, second = Recorder(), Recorder()
    gate = asyncio.Event()

    async def slow(event: Any) -> None:
        await first(event)
        if len(first.seen) == 50:
            gate.set()
            await asyncio.sleep(0.2)  # the stop arrives in the middle of a batch

    a = make_group(redis_client, app_id, "w1", lambda bus: bus.subscribe(slow, ["order"]),
                   batch_max=100)
    running.append(asyncio.ensure_future(a.run()))
    await asyncio.wait_for(gate.wait(), 10)
    assert await a.stop(10.0)
    # Everything logged before the stop was handled, once, and the cursor is past it.
    assert first.seen == [e.event_id for e in events]
    assert await finished(redis_client, app_id) == 300

    later = orders(20)
    await log_events(redis_client, later)
    b = make_group(redis_client, app_id, "w2",
                   lambda bus: bus.subscribe(second, ["order"], name="recorder"))
    running.append(asyncio.ensure_future(b.run()))
    await wait_until(lambda: len(second.seen) >= 20,
                     "the next holder to start at once (lease released)", timeout=5)
    assert second.seen == [e.event_id for e in later]


class Book:
    """An idempotent handler keeping a position per symbol in Redis through its effects."""

    def __init__(self, key: str, crash_after: int | None = None) -> None:
        self.key = key
        self.calls: list[str] = []
        self.crash_after = crash_after
        self.stuck = asyncio.Event()

    async def __call__(self, event: Any, effects: Effects) -> None:
        if self.crash_after is not None and len(self.calls) == self.crash_after:
            self.stuck.set()
            await asyncio.Event().wait()  # dies here, before staging anything
        self.calls.append(event.event_id)
        effects.hincrbyfloat(self.key, event.symbol, event.quantity)
        effects.rpush(f"{self.key}:applied", event.event_id)


async def test_an_idempotent_handler_takes_effect_exactly_once_across_a_crash(
    redis_client: Redis, app_id: str, running: list[asyncio.Task[None]]
) -> None:
    events = orders(60)
    await log_events(redis_client, events)
    key = f"book:{app_id}"
    seen_plain: list[str] = []
    first = Book(key, crash_after=25)
    resumed: list[str] = []

    def setup_with(book: Book, name: str) -> Callable[[HandlerRegistry], None]:
        def setup(bus: HandlerRegistry) -> None:
            bus.subscribe(book, ["order"], name="book", idempotent=True)
            bus.subscribe(lambda e: seen_plain.append(e.event_id), ["order"], name="plain")
            bus.on_resume(lambda: resumed.append(name))
        return setup

    a = make_group(redis_client, app_id, "w1", setup_with(first, "w1"))
    task_a = asyncio.ensure_future(a.run())
    running.append(task_a)
    await asyncio.wait_for(first.stuck.wait(), 10)
    await crash(task_a)
    recorded = await redis_client.hlen(handler_completions(app_id, "order"))
    assert recorded == 25  # 25 completed, the cursor not moved past any

    second = Book(key)
    b = make_group(redis_client, app_id, "w2", setup_with(second, "w2"))
    running.append(asyncio.ensure_future(b.run()))
    await wait_acknowledged(redis_client, app_id, len(events))
    # The book was not given the 25 orders it completed; everything else once.
    assert second.calls == [e.event_id for e in events[25:]]
    applied = [v.decode() for v in await redis_client.lrange(f"{key}:applied", 0, -1)]
    assert applied == [e.event_id for e in events]
    position = {k.decode(): float(v) for k, v in (await redis_client.hgetall(key)).items()}
    expected: Counter[str] = Counter()
    for e in events:
        expected[e.symbol] += e.quantity  # type: ignore[attr-defined]
    assert position == pytest.approx(dict(expected))
    # A plain handler is at least once: the whole unfinished batch again.
    assert Counter(seen_plain)[events[0].event_id] == 2
    assert resumed == ["w1", "w2"]
    # Records live until the cursor passes their entries.
    assert await redis_client.hlen(handler_completions(app_id, "order")) == 0
    assert REGISTRY.get_sample_value("silvertine_handler_already_done_total",
                                     {"handler": "book"}) >= 25


async def test_staged_writes_of_a_failed_call_are_dropped_and_refused_ones_counted(
    redis_client: Redis, app_id: str, running: list[asyncio.Task[None]]
) -> None:
    events = orders(2)
    await log_events(redis_client, events)
    await redis_client.set(f"wrong:{app_id}", "a string")

    def broken(event: Any, effects: Effects) -> None:
        effects.set(f"staged:{app_id}:{event.event_id}", "1")
        raise RuntimeError("handler bug")

    def refused(event: Any, effects: Effects) -> None:
        effects.rpush(f"wrong:{app_id}", "x")  # WRONGTYPE
        effects.set(f"after:{app_id}:{event.event_id}", "1")

    def setup(bus: HandlerRegistry) -> None:
        bus.subscribe(broken, ["order"], name="broken", idempotent=True)
        bus.subscribe(refused, ["order"], name="refused", idempotent=True)

    group = make_group(redis_client, app_id, "w1", setup)
    running.append(asyncio.ensure_future(group.run()))
    await wait_acknowledged(redis_client, app_id, 2)
    assert await redis_client.keys(f"staged:{app_id}:*") == []
    assert len(await redis_client.keys(f"after:{app_id}:*")) == 2  # Redis does not roll back
    assert REGISTRY.get_sample_value("silvertine_handler_failures_total",
                                     {"handler": "refused", "kind": "error"}) >= 2


