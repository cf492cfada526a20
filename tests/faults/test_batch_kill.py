"""``kill -9`` of a worker mid-batch on single-event messages from a librdkafka producer.

The worker's unit of work is a batch of whatever was fetched: many single-event
messages are logged with one write, then acknowledged together, and their
offsets committed later (every ``broker_commit_interval`` or
``broker_commit_every`` acks). A kill lands between a batch's log write and
the commit of its offsets, or in the middle of building or writing one; the
next worker is redelivered all of it. Nothing may be lost, logged twice or
reordered (DESIGN §3, guarantees 1-3).
"""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer
from redis.asyncio import Redis

from silvertine_streams.events import encode_event
from silvertine_streams.settings import Settings
from silvertine_streams.topics import event_topic
from tests.faults.test_worker_faults import (
    EVENT_TYPE,
    InvalidFeed,
    TickSource,
    assert_dlq_is_exactly,
    assert_log_is_exactly,
    balanced_symbols,
    dead_letter_key,
    log_length,
    metric,
    produce_paced,
    start_worker,
    wait_for_log_length,
    worker_report,
)
from tests.logcheck import read_log
from tests.pipeline_support import WorkerPool

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

SYMBOLS = balanced_symbols(16)
BACKLOG_ROUNDS = 40  # 16 symbols x 20 ticks x 40 = 12,800 messages waiting at the start
PACED_ROUNDS = 60  # then 320 messages every 0.1 s while the kills happen


def librdkafka_producer(settings: Settings) -> Producer:
    """A confluent-kafka (librdkafka) producer, as a Java or C++ venue gateway would send.

    ``murmur2_random`` is the Java client's partitioner (and aiokafka's): a
    symbol's messages land where the engine's own publisher puts them.
    """
    return Producer({
        "bootstrap.servers": ",".join(settings.kafka_bootstrap),
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "acks": "all",
        "enable.idempotence": False,  # Tansu refuses InitProducerId (DESIGN §5)
    })


async def produce(producer: Producer, messages: list[tuple[bytes, bytes]]) -> None:
    """Produce ``(key, value)`` messages, one event each, and wait until Kafka has them."""
    topic = event_topic(EVENT_TYPE)
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                await asyncio.to_thread(producer.poll, 0.1)
    remaining = await asyncio.to_thread(producer.flush, 30)
    assert remaining == 0, f"{remaining} messages not delivered within 30 s"
    assert not failures, f"delivery failed: {failures[:3]}"


async def test_kill_9_mid_batch_on_single_event_messages_loses_doubles_and_reorders_nothing(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    """SIGKILL the worker twice while it logs single-event messages in batches.

    12.8k sequenced ticks (16 symbols, 4 partitions), one event per Kafka
    message, wait in the topic when the first worker starts, so its first
    batches are large; 19.2k more arrive at ~3.2k/s while it runs, with invalid
    single messages among them. The worker is SIGKILLed at ~25% and ~60% of the
    log; a new worker starts each time.

    Proves: the log holds every valid event exactly once and in sequence order
    per symbol, the DLQ every invalid one and nothing else (log ⊎ DLQ ==
    produced); and a restarted worker really was redelivered logged events
    (dedupe hits > 0), so kills landed between a batch's log write and its
    commit and the idempotent sink, not luck, kept the log exact.
    """
    ticks = TickSource(SYMBOLS, source="gateway", per_symbol=20)  # 320 events per round
    invalid = InvalidFeed()
    producer = librdkafka_producer(pipeline_settings)

    def round_messages(index: int) -> list[tuple[bytes, bytes]]:
        messages = [(event.partition_key.encode(), encode_event(event))
                    for event in ticks.next_round()]
        if index % 10 == 5:  # invalid events scattered through the stream
            messages += invalid.kafka_messages()
        return messages

    await produce(producer, [m for i in range(BACKLOG_ROUNDS) for m in round_messages(i)])
    total = (BACKLOG_ROUNDS + PACED_ROUNDS) * len(SYMBOLS) * ticks.per_symbol

    async def send_round(index: int) -> None:
        await produce(producer, round_messages(BACKLOG_ROUNDS + index))

    worker = start_worker(workers)
    await wait_for_log_length(redis_client, 1, workers, "the first worker's first batch")
    production = asyncio.create_task(
        produce_paced(send_round, interval_s=0.1, rounds=PACED_ROUNDS))
    redelivered_duplicates = 0.0
    try:
        first = worker
        for fraction in (0.25, 0.60):
            await wait_for_log_length(redis_client, int(total * fraction), workers,
                                      f"{fraction:.0%} before the kill", production=production)
            if worker is not first:
                redelivered_duplicates += await asyncio.to_thread(
                    metric, worker, "silvertine_dedupe_hits_total")
            worker.kill()
            at_kill = await log_length(redis_client)
            assert at_kill < total, f"everything was logged before the kill at {fraction:.0%}"
            worker = start_worker(workers)
            await wait_for_log_length(redis_client, at_kill + 1, workers,
                                      f"progress after the kill at {fraction:.0%}",
                                      production=production)
        await production
    finally:
        production.cancel()

    assert len(ticks.produced) == total
    await assert_log_is_exactly(redis_client, ticks.produced + invalid.valid, workers)
    letters = await assert_dlq_is_exactly(redis_client, invalid.produced_keys)
    logged_ids = {event["event_id"] for event in await read_log(redis_client, EVENT_TYPE)}
    dead_keys = {dead_letter_key(letter["payload"]) for letter in letters}
    assert not logged_ids & dead_keys, "an event is both logged and dead-lettered"
    redelivered_duplicates += await asyncio.to_thread(
        metric, worker, "silvertine_dedupe_hits_total")
    assert redelivered_duplicates > 0, (
        "no restarted worker was redelivered an already-logged event: the kills never "
        f"landed between a batch's log write and its commit\n{worker_report(workers)}")
    assert worker.alive(), f"the last worker died\n{worker_report(workers)}"
