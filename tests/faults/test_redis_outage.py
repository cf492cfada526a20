"""A Redis outage under a live stream: backpressure, not loss (DESIGN §3, guarantees 1, 2, 4).

A real ``silvertine worker`` consumes a stream that keeps being produced to
Kafka while the session's redis-server (AOF, ``appendfsync always``) is stopped
for a few seconds and started again on the same port. The canonical-log sink
must block and retry instead of raising (Faust would acknowledge the message
and lose it), the worker must survive, and once Redis is back every event
produced before, during and after the outage must be in the log exactly once.

A producer on the Kafka path does not need Redis at all, so an outage of Redis
must not stop it either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.events import Event, MarketDataEvent
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import Settings
from silvertine_streams.topics import log_stream
from tests.helpers import async_wait_for
from tests.logcheck import assert_log_invariants, read_dlq, read_log
from tests.pipeline_support import WorkerPool, metrics_of
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

EVENT_TYPE = "market_data"
SYMBOLS = ("AAPL", "MSFT", "ESZ6", "NVDA", "TSLA", "AMZN", "GOOG", "META")
OUTAGE_S = 3.0
# Worker start-up on Tansu takes seconds on 2 cores; deadlines are generous.
TIMEOUT_S = 60.0


def metric(worker: WorkerProcess, name: str) -> float:
    """One ``{event_type="market_data"}`` sample of a worker's metrics (0 when absent)."""
    return metrics_of(worker).get((name, (("event_type", EVENT_TYPE),)), 0.0)


async def scrape(worker: WorkerProcess, name: str) -> float:
    """:func:`metric` off the event loop (urllib blocks), so production keeps its pace."""
    return await asyncio.to_thread(metric, worker, name)


class Ticks:
    """Sequenced market data per symbol, a round at a time; remembers what was published."""

    def __init__(self, per_symbol: int) -> None:
        self.per_symbol = per_symbol
        self.next_sequence = dict.fromkeys(SYMBOLS, 1)
        self.produced: list[Event] = []

    def next_round(self) -> list[Event]:
        """Build the next ``per_symbol`` sequences of every symbol (not yet recorded)."""
        batch: list[Event] = []
        for _ in range(self.per_symbol):
            for symbol in SYMBOLS:
                sequence = self.next_sequence[symbol]
                self.next_sequence[symbol] = sequence + 1
                batch.append(MarketDataEvent(symbol=symbol, price=50.0 + sequence % 7,
                                             source="feed-outage", sequence=sequence))
        return batch

    async def publish_round(self, publisher: Publisher) -> None:
        """Publish the next round; record it only once Kafka has it."""
        batch = self.next_round()
        await publisher.publish_many(batch)
        self.produced.extend(batch)


async def produce_until(publisher: Publisher, ticks: Ticks, stop: asyncio.Event,
                        interval_s: float) -> None:
    """Publish a round every ``interval_s`` until ``stop`` is set.

    The pause is the producer's rate, so the stream keeps flowing through the
    outage; it is not a way to wait for the worker.
    """
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while not stop.is_set():
        await ticks.publish_round(publisher)
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def still_producing(production: asyncio.Task[None]) -> None:
    """Raise the producer's own error at once instead of waiting out a deadline."""
    if production.done() and not production.cancelled() and production.exception():
        raise AssertionError("the producer failed") from production.exception()


@pytest.fixture
def stack(embedded_stack: EmbeddedStack | None) -> EmbeddedStack:
    """The session's embedded stack; skip when the servers are external (set by env)."""
    if embedded_stack is None:
        pytest.skip("stops and restarts the session's redis-server, so it needs the embedded "
                    "stack; SILVERTINE_KAFKA_URL/SILVERTINE_REDIS_URL name external servers, "
                    "which a test must not stop")
    return embedded_stack


@pytest.fixture
def redis_restarted_afterwards(stack: EmbeddedStack) -> Iterator[EmbeddedStack]:
    """The stack; Redis is started again after the test whatever happened (tests share it)."""
    try:
        yield stack
    finally:
        stack.start_server("redis")  # a no-op when it runs


@pytest.fixture
async def fresh_redis(pipeline_settings: Settings) -> AsyncIterator[Redis]:
    """A client of the test's own for after an outage (the fixture's saw its server die)."""
    client = Redis.from_url(str(pipeline_settings.redis_url))
    try:
        yield client
    finally:
        await client.aclose()


async def test_worker_blocks_and_retries_through_a_redis_restart(
    pipeline_settings: Settings,
    redis_client: Redis,
    workers: WorkerPool,
    redis_restarted_afterwards: EmbeddedStack,
    fresh_redis: Redis,
) -> None:
    """Stop Redis under a flowing stream for ~3 s; the worker retries, survives, loses nothing.

    Proves (DESIGN §3):

    * guarantee 4, backpressure: while Redis is down the worker's
      ``silvertine_sink_retries_total`` rises and its intake stalls (at most
      one envelope enters the pipeline and waits), although Kafka keeps
      receiving events;
    * the worker process does not crash on the outage;
    * guarantees 1 and 2 across a Redis restart (AOF): every event produced
      before, during and after the outage is in ``log:market_data``, each id
      exactly once, sequences strictly increasing per symbol, and nothing
      is dead-lettered.
    """
    stack = redis_restarted_afterwards
    ticks = Ticks(per_symbol=25)  # 200 events per round, 2k/s at one round every 0.1 s
    # Market data may be conflated under overload by design (DESIGN §3.4); the
    # backlog an outage builds must not be shed here: every event must be logged.
    worker = workers.start(SILVERTINE_OVERFLOW_POLICIES="market_data=block")
    # This producer stands for a feed writing to Kafka: the Publisher's ingress-
    # backlog check reads Redis and is tested on its own below, not here.
    producer_settings = pipeline_settings.model_copy(update={"publish_max_backlog": 0})
    stop = asyncio.Event()
    async with Publisher(producer_settings) as publisher:
        await ticks.publish_round(publisher)
        warm_up = len(ticks.produced)

        async def flowing(at_least: int) -> bool:
            return int(await redis_client.xlen(log_stream(EVENT_TYPE))) >= at_least

        try:
            await async_wait_for(lambda: flowing(warm_up), timeout=TIMEOUT_S,
                                 message="the worker to log the warm-up round")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{workers.logs()}") from None

        production = asyncio.create_task(produce_until(publisher, ticks, stop, interval_s=0.1))
        try:
            # The paced stream reaches the log before the outage starts.
            async def flowing_more() -> bool:
                still_producing(production)
                return await flowing(warm_up + 1000)

            await async_wait_for(flowing_more, timeout=TIMEOUT_S,
                                 message="the paced stream to reach the log")
            retries_before = await scrape(worker, "silvertine_sink_retries_total")

            produced_at_stop = len(ticks.produced)
            outage_started = time.monotonic()
            await asyncio.to_thread(stack.stop_server, "redis")
            # Read once Redis is down: writes that finished while it was stopping are
            # not "logged while Redis was down" (a loaded machine fits several in).
            logged_before = await scrape(worker, "silvertine_events_logged_total")
            try:
                # A deadline loop that is the outage's duration: Redis stays down
                # for at least OUTAGE_S, and until the worker proves it retries.
                intake_while_blocked: list[float] = []

                async def retried_through_the_outage() -> bool:
                    still_producing(production)
                    assert worker.alive(), f"the worker died in the outage\n{workers.logs()}"
                    retries = await scrape(worker, "silvertine_sink_retries_total")
                    if retries >= retries_before + 2:
                        # Retrying: its intake is now held at the blocked message.
                        intake_while_blocked.append(
                            await scrape(worker, "silvertine_events_in_total"))
                    return (len(intake_while_blocked) >= 2
                            and time.monotonic() - outage_started >= OUTAGE_S)

                try:
                    await async_wait_for(retried_through_the_outage, timeout=30, interval=0.1,
                                         message="the worker's sink retries to rise while "
                                                 "Redis is down")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{workers.logs()}") from None
                produced_in_outage = len(ticks.produced)
                logged_in_outage = await scrape(worker, "silvertine_events_logged_total")
            finally:
                # Always, and at once: later tests share this Redis.
                await asyncio.to_thread(stack.start_server, "redis")

            # Production goes on until the worker has caught up with the outage.
            await _wait_for_log(fresh_redis, produced_in_outage, workers, production)
        finally:
            stop.set()
            await production  # raises the producer's error, if any
    logged = await _wait_for_log(fresh_redis, len(ticks.produced), workers)
    dead_letters = await read_dlq(fresh_redis)

    produced_ids = {event.event_id for event in ticks.produced}
    logged_ids = [event["event_id"] for event in logged]
    assert set(logged_ids) == produced_ids, (
        f"missing {len(produced_ids - set(logged_ids))}, "
        f"unexpected {len(set(logged_ids) - produced_ids)}")
    assert_log_invariants(logged)  # each id once; sequences strictly increase per symbol
    assert dead_letters == [], f"dead letters although every event was valid: {dead_letters[:3]}"
    assert worker.alive(), f"the worker crashed\n{workers.logs()}"
    # Backpressure: with the sink blocked, at most the one envelope in hand entered.
    stalled_growth = intake_while_blocked[-1] - intake_while_blocked[0]
    assert stalled_growth <= pipeline_settings.envelope_max_events, (
        f"intake grew by {stalled_growth} events while the sink was blocked")
    assert logged_in_outage - logged_before <= pipeline_settings.envelope_max_events, (
        "more than one envelope counted as logged while Redis was down")
    # Without this the outage would have held nothing back and proven nothing.
    assert produced_in_outage > produced_at_stop, "nothing was produced during the outage"


async def test_kafka_publisher_keeps_publishing_while_redis_is_down(
    pipeline_settings: Settings, redis_restarted_afterwards: EmbeddedStack
) -> None:
    """``Publisher.publish_many`` to Kafka works (or waits) during a Redis outage; it never raises.

    Proves (DESIGN §3, guarantee 1 for the Kafka ingress path): a feed that
    publishes to Kafka is not stopped by an outage of Redis, which that path
    does not need. The Publisher's flow control may consult Redis (ingress
    backlog) but, like its Kafka-lag check, must treat an unanswered check as
    "no backlog" (its docstring: "an async wait, never an error").
    """
    stack = redis_restarted_afterwards
    ticks = Ticks(per_symbol=5)
    await asyncio.to_thread(stack.stop_server, "redis")
    try:
        async with Publisher(pipeline_settings) as publisher:
            # A fresh Publisher checks its backlog on its first publish.
            messages = await asyncio.wait_for(publisher.publish_many(ticks.next_round()), 30)
    finally:
        await asyncio.to_thread(stack.start_server, "redis")
    assert messages > 0


async def _wait_for_log(
    redis: Redis, count: int, pool: WorkerPool, production: asyncio.Task[None] | None = None
) -> list[dict[str, object]]:
    """Wait until the log holds ``count`` events; return the whole log."""
    async def complete() -> bool:
        if production is not None:
            still_producing(production)
        return int(await redis.xlen(log_stream(EVENT_TYPE))) >= count

    try:
        await async_wait_for(complete, timeout=TIMEOUT_S, interval=0.1,
                             message=f"log:{EVENT_TYPE} to hold all {count} events")
    except AssertionError as exc:
        if exc.__cause__ is not None:  # the producer failed: that is the story
            raise
        raise AssertionError(f"{exc}\n{pool.logs()}") from None
    return await read_log(redis, EVENT_TYPE)
