"""silvertine_streams.ingress.mirror against real Redis and a real broker: entries
XADDed to ``events:<type>`` reach Kafka, and are acknowledged and deleted in
Redis only after Kafka confirmed them; a failed send leaves them for the next
holder of the lease, which re-sends them.

The mirror is driven step by step (no worker); its Kafka sender is aiokafka's
producer, wrapped to look at Redis at the moment of each send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from silvertine_streams.events.codec import decode_message, encode_event
from silvertine_streams.events.enums import EventType, OrderSide
from silvertine_streams.events.model import Event, OrderEvent
from silvertine_streams.ingress.mirror import IngressMirror
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.kafka.envelopes import Envelope
from silvertine_streams.settings import Settings
from silvertine_streams.sinks.dead_letters import DeadLetterSink
from silvertine_streams.topics import (
    DLQ_STREAM,
    INGRESS_GROUP,
    event_topic,
    ingress_lease,
    ingress_stream,
)
from tests.helpers import async_wait_for

pytestmark = pytest.mark.integration

STREAM = ingress_stream("order")
TOPIC = event_topic("order")


def orders(symbol: str, count: int) -> list[OrderEvent]:
    return [OrderEvent(order_id=f"{symbol}-{n}", symbol=symbol, side=OrderSide.BUY,
                       quantity=float(n), source="oms", sequence=n)
            for n in range(1, count + 1)]


class KafkaSender:
    """Sends envelopes with aiokafka; before each send, notes what Redis still holds."""

    def __init__(self, producer: AIOKafkaProducer, redis: Redis) -> None:
        self.producer = producer
        self.redis = redis
        self.seen_at_send: list[tuple[int, int]] = []  # (XLEN, pending) per envelope
        self.fail_with: BaseException | None = None
        self.sent_events = 0

    async def __call__(self, envelope: Envelope) -> None:
        pending: Any = await self.redis.xpending(STREAM, INGRESS_GROUP)
        self.seen_at_send.append((await self.redis.xlen(STREAM), pending["pending"]))
        if self.fail_with is not None:
            raise self.fail_with
        await self.producer.send_and_wait(envelope.topic, envelope.payload, key=envelope.key,
                                          partition=envelope.partition)
        self.sent_events += len(envelope.events)


@pytest.fixture
async def kafka(fresh_kafka: Settings) -> AsyncIterator[tuple[Settings, AIOKafkaProducer]]:
    await ensure_topics(fresh_kafka)
    producer = AIOKafkaProducer(bootstrap_servers=fresh_kafka.kafka_bootstrap)
    await producer.start()
    try:
        yield fresh_kafka, producer
    finally:
        await producer.stop()


def mirror(redis: Redis, send: KafkaSender, settings: Settings, name: str,
           lease_ms: int = 5000) -> IngressMirror:
    return IngressMirror(redis, EventType.ORDER, send, DeadLetterSink(redis), name,
                         settings.partitions, batch_max=500, lease_ms=lease_ms)


async def consume(settings: Settings, expected: int) -> list[Event]:
    """Every event on the order topic, partition by partition, once ``expected`` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        events: list[Event] = []
        deadline = time.monotonic() + 20
        while len(events) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    decoded = decode_message(record.value, EventType.ORDER)
                    assert not decoded.rejects
                    events.extend(decoded.events)
        return events
    finally:
        await consumer.stop()


async def test_entries_reach_kafka_and_are_acknowledged_only_after_the_send(
    kafka: tuple[Settings, AIOKafkaProducer], redis_client: Redis
) -> None:
    settings, producer = kafka
    sent = orders("AAPL", 5) + orders("MSFT", 4)
    for event in sent:
        await redis_client.xadd(STREAM, {"event": encode_event(event)})
    sender = KafkaSender(producer, redis_client)
    the_mirror = mirror(redis_client, sender, settings, "mirror-a")

    assert await the_mirror.step() == len(sent)

    # At every send all entries were still in the stream, read but not acknowledged.
    assert sender.seen_at_send and set(sender.seen_at_send) == {(len(sent), len(sent))}
    assert sender.sent_events == len(sent)
    # After the sends: acknowledged and deleted.
    assert await redis_client.xlen(STREAM) == 0
    pending: Any = await redis_client.xpending(STREAM, INGRESS_GROUP)
    assert pending["pending"] == 0
    assert the_mirror.mirrored == len(sent)
    received = await consume(settings, len(sent))
    assert sorted(e.event_id for e in received) == sorted(e.event_id for e in sent)
    for symbol in ("AAPL", "MSFT"):  # each symbol's order is kept
        assert [e.sequence for e in received if e.partition_key == symbol] == [
            e.sequence for e in sent if e.symbol == symbol]
    assert await the_mirror.step(block_ms=10) == 0  # nothing new


async def test_a_failed_send_leaves_the_entries_for_the_next_holder(
    kafka: tuple[Settings, AIOKafkaProducer], redis_client: Redis
) -> None:
    settings, producer = kafka
    sent = orders("IBM", 3)
    for event in sent:
        await redis_client.xadd(STREAM, {"event": encode_event(event)})
    failing = KafkaSender(producer, redis_client)
    failing.fail_with = ConnectionError("broker unreachable")
    first = mirror(redis_client, failing, settings, "mirror-dies", lease_ms=300)

    with pytest.raises(ConnectionError):
        await first.step()

    # Nothing was acknowledged: the entries stay, pending on the mirror that read them.
    assert await redis_client.xlen(STREAM) == len(sent)
    pending: Any = await redis_client.xpending(STREAM, INGRESS_GROUP)
    assert pending["pending"] == len(sent)
    assert failing.sent_events == 0

    # Another worker takes the stream over once the dead holder's lease expires, and
    # re-sends what it had read (XAUTOCLAIM) before reading anything new.
    sender = KafkaSender(producer, redis_client)
    second = mirror(redis_client, sender, settings, "mirror-takes-over", lease_ms=300)
    assert await second.step(block_ms=10) == 0  # the lease is still held
    assert await redis_client.get(ingress_lease("order")) == b"mirror-dies"
    handled: list[int] = []

    async def took_over() -> bool:
        handled.append(await second.step(block_ms=10))
        return sender.sent_events > 0

    await async_wait_for(took_over, timeout=10, message="the second mirror takes the stream over")
    assert handled[-1] == len(sent)  # the reclaimed entries count as handled in that round
    assert sender.sent_events == len(sent)
    assert sender.seen_at_send == [(len(sent), len(sent))]  # still unacknowledged at the send
    assert await redis_client.xlen(STREAM) == 0
    received = await consume(settings, len(sent))
    assert [e.event_id for e in received] == [e.event_id for e in sent]


async def test_entries_that_cannot_be_decoded_go_to_the_dlq_and_leave_the_stream(
    kafka: tuple[Settings, AIOKafkaProducer], redis_client: Redis
) -> None:
    settings, producer = kafka
    good = orders("AAPL", 2)
    await redis_client.xadd(STREAM, {"event": encode_event(good[0])})
    no_field: Any = await redis_client.xadd(STREAM, {"payload": b"misnamed"})
    not_json: Any = await redis_client.xadd(STREAM, {"event": b"{not json"})
    await redis_client.xadd(STREAM, {"event": encode_event(good[1])})
    sender = KafkaSender(producer, redis_client)

    assert await mirror(redis_client, sender, settings, "mirror-a").step() == 4

    assert sender.sent_events == 2
    assert await redis_client.xlen(STREAM) == 0
    letters: Any = await redis_client.xrange(DLQ_STREAM)
    by_origin = {fields[b"origin"].decode(): fields for _, fields in letters}
    assert set(by_origin) == {f"{STREAM}/{no_field.decode()}", f"{STREAM}/{not_json.decode()}"}
    missing = by_origin[f"{STREAM}/{no_field.decode()}"]
    assert missing[b"reason"] == b"invalid: ingress entry has no 'event' field"
    broken = by_origin[f"{STREAM}/{not_json.decode()}"]
    assert broken[b"payload"] == b"{not json"
    assert broken[b"reason"].startswith(b"invalid: ")
    received = await consume(settings, 2)
    assert [e.event_id for e in received] == [e.event_id for e in good]


async def test_an_oversize_entry_is_a_dead_letter_and_the_mirror_goes_on(
    kafka: tuple[Settings, AIOKafkaProducer], redis_client: Redis
) -> None:
    # A 3 MB event through the Redis ingress once crash-looped the worker: Kafka's
    # producer refused the envelope (MessageSizeTooLargeError) and nothing was acked.
    settings, producer = kafka
    good = orders("AAPL", 2)
    huge = orders("MSFT", 1)[0].with_changes(metadata={"blob": "x" * 3_000_000})
    await redis_client.xadd(STREAM, {"event": encode_event(good[0])})
    huge_id: Any = await redis_client.xadd(STREAM, {"event": encode_event(huge)})
    await redis_client.xadd(STREAM, {"event": encode_event(good[1])})
    sender = KafkaSender(producer, redis_client)

    assert await mirror(redis_client, sender, settings, "mirror-a").step() == 3

    assert await redis_client.xlen(STREAM) == 0  # all acknowledged, the big one too
    [(_, letter)] = await redis_client.xrange(DLQ_STREAM)
    assert letter[b"origin"].decode() == f"{STREAM}/{huge_id.decode()}"
    assert letter[b"reason"].startswith(b"too_large: ")
    assert f" of {len(encode_event(huge))} bytes is over ".encode() in letter[b"reason"]
    assert len(letter[b"payload"]) == 1024  # a preview, so the dead letter fits anywhere
    received = await consume(settings, 2)
    assert [e.event_id for e in received] == [e.event_id for e in good]


async def test_a_stopped_mirror_finishes_its_round_and_hands_the_lease_back(
    kafka: tuple[Settings, AIOKafkaProducer], redis_client: Redis
) -> None:
    settings, producer = kafka
    sender = KafkaSender(producer, redis_client)
    first = mirror(redis_client, sender, settings, "mirror-stops", lease_ms=5000)
    running = asyncio.create_task(first.run())
    try:
        sent = orders("AAPL", 3)
        for event in sent:
            await redis_client.xadd(STREAM, {"event": encode_event(event)})

        async def mirrored() -> bool:
            return sender.sent_events == len(sent) and await redis_client.xlen(STREAM) == 0

        await async_wait_for(mirrored, timeout=10, message="the running mirror sends the entries")
        assert await redis_client.get(ingress_lease("order")) == b"mirror-stops"

        await asyncio.wait_for(first.stop(), timeout=10)

        assert running.done() and running.exception() is None
        assert await redis_client.exists(ingress_lease("order")) == 0
    finally:
        running.cancel()
    # Another worker mirrors at once: no lease to wait out.
    later = orders("MSFT", 2)
    for event in later:
        await redis_client.xadd(STREAM, {"event": encode_event(event)})
    second = mirror(redis_client, sender, settings, "mirror-next", lease_ms=5000)
    assert await second.step(block_ms=10) == len(later)


async def test_stop_leaves_a_lease_another_mirror_holds(
    kafka: tuple[Settings, AIOKafkaProducer], redis_client: Redis
) -> None:
    settings, producer = kafka
    await redis_client.set(ingress_lease("order"), b"someone-else", px=5000)
    idle = mirror(redis_client, KafkaSender(producer, redis_client), settings, "never-ran")

    await asyncio.wait_for(idle.stop(), timeout=10)

    assert await redis_client.get(ingress_lease("order")) == b"someone-else"
