"""SIGTERM to ``silvertine worker`` mid-stream: a graceful stop (DESIGN §3, guarantee 6).

A real worker, under its supervisor, with a handler that records every event id
it is given in the Redis stream ``test:handled``, consumes a live stream on both
ingress paths (Kafka envelopes and the Redis ingress stream, which the worker's
mirror moves into Kafka), with invalid events mixed in. While events flow, and
just as the handler starts on an envelope (30 logged events it has not been
given yet), the supervisor gets SIGTERM. Then, as any client would see it:

* the supervisor exits 0 well within ``SILVERTINE_STOP_TIMEOUT_S`` (it did not
  have to kill its child);
* every event in the log was handled exactly once, and nothing else was;
* log ⊎ DLQ holds only what was produced, nothing twice in the log, and the
  group's committed offsets cover every message the log or DLQ was written from
  (the stop committed what it finished);
* the ingress leases (``lease:events:<type>``) are gone at once, not left to
  expire, so another worker can take the ingress streams over without waiting;

and after a restart the log holds everything produced exactly once, the DLQ
every invalid event, every logged event was handled exactly once over both
workers, and the restarted worker was redelivered nothing already logged.

Both halves failed before their fixes: a message was acknowledged before its
handlers ran, so the stop committed it and then cancelled the agent mid-dispatch
(17-41 logged events of one envelope never handled, in every run); and the
mirrors never deleted their leases (each left to expire, ~4 s after the exit).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter

import pytest
from redis.asyncio import Redis

from silvertine_streams.events import OrderEvent, OrderSide
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import Settings
from silvertine_streams.topics import DLQ_STREAM, event_topic, ingress_lease, log_stream
from tests.faults.test_worker_faults import (
    EVENT_TYPE,
    SYMBOLS,
    InvalidFeed,
    TickSource,
    assert_dlq_is_exactly,
    assert_log_is_exactly,
    committed_offsets,
    dead_letter_key,
    metric,
    produce_paced,
    raw_producer,
    wait_for_log_length,
    worker_report,
)
from tests.handler_fixtures import SEEN_STREAM
from tests.helpers import async_wait_for
from tests.logcheck import assert_log_invariants, read_dlq, read_log
from tests.pipeline_support import WorkerPool, metrics_of
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

STOP_TIMEOUT_S = 20.0
"""``SILVERTINE_STOP_TIMEOUT_S`` of the test's workers: past it the supervisor kills."""
UNHANDLED_AT_STOP = 30
"""Logged events the handler has yet to be given when SIGTERM is sent (~1 ms each)."""


def start_recording_worker(pool: WorkerPool) -> WorkerProcess:
    """Start a worker whose only handler records every market-data event id it is given."""
    settings = pool.settings.model_copy(update={"stop_timeout_s": STOP_TIMEOUT_S})
    # Shedding off: every valid event must reach the log (market data may be
    # conflated under overload by design). PYTHONPATH: the worker imports tests.*.
    return pool.start(settings, PYTHONPATH=os.getcwd(),
                      SILVERTINE_HANDLERS="tests.handler_fixtures:record_market_data",
                      SILVERTINE_OVERFLOW_POLICIES="market_data=block")


async def stop_gracefully(worker: WorkerProcess) -> tuple[int, float]:
    """SIGTERM the supervisor; return its exit status and how long the stop took.

    Waits past ``STOP_TIMEOUT_S`` (the supervisor's own deadline) so that a
    stop the supervisor had to end by killing shows up as its status, not as
    our timeout.
    """
    assert worker.process is not None
    started = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)

    process = worker.process

    async def exited() -> bool:
        return process.poll() is not None

    try:
        await async_wait_for(exited, timeout=STOP_TIMEOUT_S + 15, interval=0.02,
                             message="the supervisor to exit after SIGTERM")
    except AssertionError as exc:
        worker.kill()
        raise AssertionError(f"{exc}\n{worker.log_tail(60)}") from None
    status = process.poll()
    assert status is not None
    return status, time.monotonic() - started


async def held_leases(redis: Redis, settings: Settings) -> dict[str, int]:
    """The ingress leases still in Redis, with their remaining time to live (ms)."""
    held: dict[str, int] = {}
    for event_type in settings.consumed_types:
        key = ingress_lease(event_type)
        if await redis.exists(key):
            held[key] = int(await redis.pttl(key))
    return held


async def handlers_running(redis: Redis) -> bool:
    """Whether the handler has ``UNHANDLED_AT_STOP`` logged events still to go (it runs)."""
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(log_stream(EVENT_TYPE))
    pipe.xlen(SEEN_STREAM)
    logged, handled = await pipe.execute()
    return int(logged) - int(handled) >= UNHANDLED_AT_STOP


async def handled_ids(redis: Redis) -> list[str]:
    """Every event id the recording handler was given, once per call."""
    return [fields[b"event_id"].decode() for _, fields in await redis.xrange(SEEN_STREAM)]


async def logged_origins(redis: Redis) -> dict[str, str]:
    """Each logged event id with the origin it was logged from (``topic/partition/offset#i``)."""
    return {json.loads(fields[b"event"])["event_id"]: fields.get(b"origin", b"").decode()
            for _, fields in await redis.xrange(log_stream(EVENT_TYPE))}


def assert_handled_exactly_once(handled: list[str], origins: dict[str, str], when: str) -> None:
    """Each logged event (``origins``' keys) was handled once; nothing unlogged was handled."""
    calls = Counter(handled)
    twice = {event_id: n for event_id, n in calls.items() if n > 1}
    never = set(origins) - set(calls)
    unlogged = set(calls) - set(origins)
    assert not twice, (f"{when}: {len(twice)} events handled more than once, e.g. "
                       f"{list(twice.items())[:5]}")
    messages = Counter(origins[event_id].split("#", 1)[0] for event_id in never)
    assert not never, (f"{when}: {len(never)} of {len(origins)} logged events never handled; "
                       f"they were logged from (message: events) {dict(messages)}")
    assert not unlogged, (f"{when}: {len(unlogged)} events handled but not logged, e.g. "
                          f"{sorted(unlogged)[:5]}")


def kafka_offset(origin: str, topic: str) -> tuple[int, int] | None:
    """``(partition, offset)`` of an origin ``topic/partition/offset[#index]`` on ``topic``."""
    parts = origin.split("#", 1)[0].split("/")
    if len(parts) != 3 or parts[0] != topic:
        return None
    return int(parts[1]), int(parts[2])


async def uncommitted_origins(redis: Redis, settings: Settings) -> list[str]:
    """Log and DLQ entries written from a Kafka message at or past the committed offset."""
    topic = event_topic(EVENT_TYPE)
    committed = await committed_offsets(settings)
    beyond: list[str] = []
    entries = [*await redis.xrange(log_stream(EVENT_TYPE)), *await redis.xrange(DLQ_STREAM)]
    for _, fields in entries:
        origin = fields.get(b"origin", b"").decode()
        where = kafka_offset(origin, topic)
        if where is None:
            continue  # a dead letter of the ingress stream: no Kafka offset
        partition, offset = where
        limit = committed.get(partition)
        if limit is None or offset >= limit:
            beyond.append(f"{origin} (committed: {limit})")
    return beyond


async def test_sigterm_mid_stream_drains_commits_hands_back_the_leases_and_exits_0(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    """SIGTERM while events flow on both paths; the stop is clean, the restart finishes the job."""
    # 200 events per round, in envelopes of 50 per partition: each takes the
    # handler tens of milliseconds, a window the stop must not cut.
    via_kafka = TickSource(SYMBOLS, source="feed-k", per_symbol=10)
    via_ingress = TickSource(SYMBOLS, source="feed-i", per_symbol=3)  # 60 events per round
    invalid = InvalidFeed()
    first = start_recording_worker(workers)
    stop_production = asyncio.Event()
    async with Publisher(pipeline_settings) as publisher:
        producer = await raw_producer(pipeline_settings)
        try:
            # Production starts once the worker consumes, so the stop lands mid-stream.
            await publisher.publish_many(via_kafka.next_round())
            await wait_for_log_length(redis_client, len(via_kafka.produced), workers, "warm-up")

            async def send_round(index: int) -> None:
                await publisher.publish_many(via_kafka.next_round())
                await publisher.publish_many_to_ingress(via_ingress.next_round())
                if index % 5 == 0:  # invalid events on both paths
                    for key, value in invalid.kafka_messages():
                        await producer.send_and_wait(event_topic(EVENT_TYPE), value, key=key)
                    for value in invalid.ingress_values():
                        await redis_client.xadd(f"events:{EVENT_TYPE}", {"event": value})

            production = asyncio.create_task(
                produce_paced(send_round, interval_s=0.4, stop=stop_production))
            try:
                await wait_for_log_length(redis_client, 2000, workers, "mid-stream",
                                          production=production)
                # The stop lands as the handler starts on an envelope: at least
                # UNHANDLED_AT_STOP logged events it has not been given yet.
                await async_wait_for(lambda: handlers_running(redis_client), timeout=30,
                                     interval=0.002, message="a moment the handler runs")
                produced_at_sigterm = len(via_kafka.produced) + len(via_ingress.produced)
                status, stop_s = await stop_gracefully(first)
                produced_at_exit = len(via_kafka.produced) + len(via_ingress.produced)
                leases = await held_leases(redis_client, pipeline_settings)
            finally:
                stop_production.set()
                await production
        finally:
            await producer.stop()

    report = f"stop took {stop_s:.1f}s, status {status}\n{worker_report(workers)}"
    assert status == 0, f"the graceful stop did not exit 0\n{report}"
    assert stop_s < STOP_TIMEOUT_S, f"the stop ran into SILVERTINE_STOP_TIMEOUT_S\n{report}"
    assert produced_at_exit > produced_at_sigterm, "production did not go on during the stop"
    assert not leases, (f"ingress leases still held after the worker exited (key: ms to live): "
                        f"{leases}; a successor waits them out before it mirrors\n{report}")

    # What the stopped worker left: only produced events, none twice, all handled once.
    valid = via_kafka.produced + via_ingress.produced + invalid.valid
    valid_ids = {event.event_id for event in valid}
    log_at_stop = await read_log(redis_client, EVENT_TYPE)
    assert_log_invariants(log_at_stop)  # no id twice; sequences increase per stream
    logged = [event["event_id"] for event in log_at_stop]
    strays = set(logged) - valid_ids
    assert not strays, f"logged but never produced: {sorted(strays)[:5]}"
    assert len(logged) < len(valid_ids), "the stream was complete before the stop: not mid-stream"
    dead = {dead_letter_key(letter["payload"]) for letter in await read_dlq(redis_client)}
    assert dead <= invalid.produced_keys, (
        f"unexpected dead letters: {sorted(dead - invalid.produced_keys)[:5]}")
    assert_handled_exactly_once(await handled_ids(redis_client),
                                await logged_origins(redis_client), "after the stop")
    beyond = await uncommitted_origins(redis_client, pipeline_settings)
    assert not beyond, (f"{len(beyond)} log/DLQ entries come from messages the stop did not "
                        f"commit, e.g. {beyond[:5]}\n{report}")

    # A new worker finishes the stream: everything once, nothing redone.
    second = start_recording_worker(workers)
    await assert_log_is_exactly(redis_client, valid, workers)
    await assert_dlq_is_exactly(redis_client, invalid.produced_keys)
    logged = [event["event_id"] for event in await read_log(redis_client, EVENT_TYPE)]

    async def all_handled() -> bool:
        return len(set(await handled_ids(redis_client))) >= len(logged)

    await async_wait_for(all_handled, timeout=60, interval=0.1,
                         message="the recorder to be given every logged event")
    assert_handled_exactly_once(await handled_ids(redis_client),
                                await logged_origins(redis_client), "after the restart")
    redone = await asyncio.to_thread(metric, second, "silvertine_dedupe_hits_total")
    assert redone == 0, (f"the restarted worker was redelivered {redone:g} already-logged "
                         f"events: the stop did not commit all it had logged\n"
                         f"{worker_report(workers)}")

    # A stop with nothing in flight is graceful too.
    status, stop_s = await stop_gracefully(second)
    assert status == 0, f"the second stop exited {status}\n{worker_report(workers)}"
    assert not await held_leases(redis_client, pipeline_settings)


async def test_sigterm_while_a_strict_stream_holds_events_for_a_gap_exits_0_without_them(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    """A stop does not wait for a reorder window: held events are left for the next worker.

    Orders are strict: after a gap the later orders wait in the reorder window
    (here for up to a minute) for the missing one. SIGTERM while they wait must
    still stop the worker at once, exit 0, leave the held orders out of the log
    and uncommitted; the next worker, given the missing order, logs all of
    them in sequence.
    """
    settings = pipeline_settings.model_copy(update={
        "stop_timeout_s": STOP_TIMEOUT_S, "reorder_wait_strict_s": 60.0})
    worker = workers.start(settings)

    def order(sequence: int) -> OrderEvent:
        return OrderEvent(order_id=f"o-{sequence}", symbol="AAPL", side=OrderSide.BUY,
                          quantity=1.0, source="oms-a", sequence=sequence)

    before_gap, after_gap, missing = [order(1), order(2)], [order(4), order(5)], order(3)
    async with Publisher(settings) as publisher:
        await publisher.publish_many(before_gap)
        await publisher.publish_many(after_gap)
    await async_wait_for(lambda: _log_holds(redis_client, "order", len(before_gap)),
                         timeout=60, message="the orders before the gap logged")

    def held() -> float:
        return metrics_of(worker).get(("silvertine_reorder_held", (("event_type", "order"),)), 0)

    await async_wait_for(lambda: asyncio.to_thread(held), timeout=30, interval=0.1,
                         message="the orders after the gap held in the reorder window")
    status, stop_s = await stop_gracefully(worker)
    assert status == 0 and stop_s < STOP_TIMEOUT_S, (
        f"stop with held events: status {status} after {stop_s:.1f}s\n{worker_report(workers)}")
    logged = [e["event_id"] for e in await read_log(redis_client, "order")]
    assert logged == [e.event_id for e in before_gap], "held orders were logged by the stop"

    async with Publisher(settings) as publisher:
        await publisher.publish(missing)
    workers.start(settings)
    await async_wait_for(lambda: _log_holds(redis_client, "order", 5), timeout=60,
                         message="every order logged after the restart")
    in_log = await read_log(redis_client, "order")
    assert [e["sequence"] for e in in_log] == [1, 2, 3, 4, 5]
    assert_log_invariants(in_log)


async def _log_holds(redis: Redis, event_type: str, count: int) -> bool:
    return int(await redis.xlen(log_stream(event_type))) >= count
