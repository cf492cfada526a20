"""``kill -9`` of the worker at random moments, many rounds: handlers and gap reports (DESIGN §3.6).

A librdkafka producer sends sequenced market data with real gaps (sequence
numbers never sent), orders, and invalid events, one event per message, while
the worker is SIGKILLed over and over at random moments after its handler group
started working; a new worker starts each time. The worker runs
``tests.handler_fixtures:setup_recorders``: a plain recorder (at least once)
of every market-data event and order, and an idempotent counter of orders.

Then, as any client reads them:

* log ⊎ DLQ = produced: every valid event logged once, every invalid one dead-lettered;
* every logged event reached the recorder (at least once), and each key's
  events reached it in log order (first sightings in increasing sequence);
* the idempotent counter counted every logged order exactly once;
* every real gap was reported exactly once in ``log:system``, and nothing else was;
* the kills really landed mid-batch: the recorder saw some events twice.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Producer
from redis.asyncio import Redis

from silvertine_streams.events import Event, MarketDataEvent, OrderEvent, OrderSide, encode_event
from silvertine_streams.settings import Settings
from silvertine_streams.topics import event_topic, handler_progress, log_stream
from tests.faults.test_batch_kill import librdkafka_producer
from tests.faults.test_worker_faults import (
    DRAIN_TIMEOUT_S,
    EVENT_TYPE,
    InvalidFeed,
    assert_dlq_is_exactly,
    assert_log_is_exactly,
    balanced_symbols,
    kill_at_random_after,
    produce_paced,
    worker_report,
)
from tests.handler_fixtures import ONCE_HASH, RECORDED_STREAM
from tests.helpers import async_wait_for
from tests.logcheck import read_log
from tests.pipeline_support import WorkerPool
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(480)]

SYMBOLS = balanced_symbols(16)
KILLS = 6
ROUND_S = 0.1
TICKS_PER_SYMBOL = 5  # 16 x 5 ticks every 0.1 s: ~800 ticks/s
ORDERS_PER_ROUND = 2
SOURCE = "gateway"
SEED = 20240611


@dataclass
class GappyFeed:
    """Sequenced ticks with real gaps, orders, and invalid events, round by round."""

    rng: random.Random
    next_sequence: dict[str, int] = field(default_factory=dict)
    ticks: list[Event] = field(default_factory=list)
    orders: list[Event] = field(default_factory=list)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    invalid: InvalidFeed = field(default_factory=InvalidFeed)
    rounds: int = 0

    def next_round(self) -> list[tuple[str, bytes, bytes]]:
        """Return ``(topic, key, value)`` messages of the next round, recording what they hold."""
        messages: list[tuple[str, bytes, bytes]] = []
        md_topic, order_topic = event_topic(EVENT_TYPE), event_topic("order")
        for _ in range(TICKS_PER_SYMBOL):
            for symbol in SYMBOLS:
                sequence = self.next_sequence.get(symbol, 1)
                if sequence > 1 and self.rng.random() < 0.004:
                    skipped = self.rng.randint(1, 3)  # never sent: a real gap
                    self.gaps.append((f"{SOURCE}/{symbol}", sequence, sequence + skipped))
                    sequence += skipped
                self.next_sequence[symbol] = sequence + 1
                tick = MarketDataEvent(symbol=symbol, price=100.0 + sequence % 50, volume=1.0,
                                       source=SOURCE, sequence=sequence)
                self.ticks.append(tick)
                messages.append((md_topic, symbol.encode(), encode_event(tick)))
        for n in range(ORDERS_PER_ROUND):
            symbol = SYMBOLS[(self.rounds * ORDERS_PER_ROUND + n) % len(SYMBOLS)]
            order = OrderEvent(order_id=f"o-{self.rounds}-{n}", symbol=symbol,
                               side=OrderSide.BUY, quantity=1.0 + n, price=10.0, source="oms")
            self.orders.append(order)
            messages.append((order_topic, symbol.encode(), encode_event(order)))
        if self.rounds % 40 == 7:
            messages += [(md_topic, key, value) for key, value in self.invalid.kafka_messages()]
        self.rounds += 1
        return messages


async def produce(producer: Producer, messages: list[tuple[str, bytes, bytes]]) -> None:
    """Produce single-event messages and wait until Kafka has them."""
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    for topic, key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                await asyncio.to_thread(producer.poll, 0.1)
    remaining = await asyncio.to_thread(producer.flush, 30)
    assert remaining == 0 and not failures, (remaining, failures[:3])


def start(pool: WorkerPool, settings: Settings) -> WorkerProcess:
    """A worker running the recorders, shedding off (every tick must reach the log)."""
    return pool.start(settings, SILVERTINE_OVERFLOW_POLICIES="market_data=block",
                      PYTHONPATH=".")


async def seen_count(redis: Redis) -> int:
    return int(await redis.xlen(RECORDED_STREAM))


async def test_handlers_see_every_logged_event_and_gaps_are_reported_once_across_kill_9s(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    rng = random.Random(SEED)
    settings = pipeline_settings.model_copy(
        update={"handlers": ("tests.handler_fixtures:setup_recorders",)})
    feed = GappyFeed(rng)
    producer = librdkafka_producer(settings)
    stop = asyncio.Event()

    async def send_round(_: int) -> None:
        await produce(producer, feed.next_round())

    worker = start(workers, settings)
    production = asyncio.create_task(produce_paced(send_round, interval_s=ROUND_S, stop=stop))
    try:
        for kill in range(KILLS):
            # Kill only once this worker's handler group is at work (it waits out the
            # dead holder's lease first), at a random moment after that.
            handled_before = await seen_count(redis_client)

            async def handling(handled_before: int = handled_before) -> bool:
                assert not production.done(), "the producer stopped early"
                return await seen_count(redis_client) > handled_before + 100

            await kill_at_random_after(handling, worker, workers, rng,
                                       f"worker {kill}'s handler group to handle events")
            worker = start(workers, settings)
        stop.set()
        await production
    finally:
        stop.set()
        production.cancel()

    await assert_log_is_exactly(redis_client, feed.ticks + feed.invalid.valid, workers)
    await assert_dlq_is_exactly(redis_client, feed.invalid.produced_keys)
    orders = await read_log(redis_client, "order")
    assert sorted(o["event_id"] for o in orders) == sorted(o.event_id for o in feed.orders)
    logged = {e["event_id"] for e in await read_log(redis_client, EVENT_TYPE)} | {
        o["event_id"] for o in orders}

    async def group_lag() -> int:
        # Cheap to poll: what the group acknowledged against the logs' lengths
        # (reading test:seen every time would load the machine it waits for).
        lag = 0
        for event_type in (EVENT_TYPE, "order"):
            acked = await redis_client.hget(handler_progress(settings.app_id), event_type)
            lag += int(await redis_client.xlen(log_stream(event_type))) - int(acked or 0)
        return lag

    async def all_handled() -> bool:
        return await group_lag() == 0

    try:
        await async_wait_for(all_handled, timeout=DRAIN_TIMEOUT_S, interval=0.2,
                             message="the handler group to finish every logged event")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker_report(workers)}") from None

    # At least once, in each key's log order; only logged events.
    entries = await redis_client.xrange(RECORDED_STREAM)
    sightings = Counter(f[b"event_id"].decode() for _, f in entries)
    assert set(sightings) == logged, (
        f"{len(logged - set(sightings))} logged events never reached the recorder; "
        f"{len(set(sightings) - logged)} it saw were never logged")
    first_seen: dict[tuple[str, str], list[int]] = {}
    counted: set[str] = set()
    for _, f in entries:
        event_id = f[b"event_id"].decode()
        if event_id in counted:
            continue
        counted.add(event_id)
        first_seen.setdefault((f[b"type"].decode(), f[b"key"].decode()), []).append(
            int(f[b"sequence"]))
    disordered = {k: s for k, s in first_seen.items() if s != sorted(s)}
    assert not disordered, f"handlers saw a key out of log order: {list(disordered)[:3]}"
    repeats = sum(n - 1 for n in sightings.values())
    assert repeats > 0, ("no event reached the recorder twice: no kill landed while a batch "
                         f"was being handled\n{worker_report(workers)}")

    # Exactly once in effect for the idempotent counter.
    once = {k.decode(): int(v) for k, v in (await redis_client.hgetall(ONCE_HASH)).items()}
    assert once == {o.event_id: 1 for o in feed.orders}, (
        f"counts other than 1: {[(k, v) for k, v in once.items() if v != 1][:5]}, "
        f"missing: {len({o.event_id for o in feed.orders} - set(once))}")

    # Every real gap reported exactly once, nothing else reported as a gap.
    assert feed.gaps, "the feed made no gap"
    system = await read_log(redis_client, "system")
    reported = Counter((e["details"]["stream"], e["details"]["expected"], e["details"]["got"])
                       for e in system if e["kind"] == "sequence_gap")
    assert reported == Counter(feed.gaps), (
        f"twice: {[g for g, n in reported.items() if n > 1][:5]}; "
        f"missing: {sorted(set(feed.gaps) - set(reported))[:5]}; "
        f"not real: {sorted(set(reported) - set(feed.gaps))[:5]}")
    assert worker.alive(), f"the last worker died\n{worker_report(workers)}"
