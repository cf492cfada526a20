"""Clients from the two factories talk to the real broker and redis-server."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from silvertine_streams.kafka.clients import kafka_admin, kafka_consumer, kafka_producer
from silvertine_streams.redis.clients import client_name, redis_client
from silvertine_streams.settings import Settings

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


async def test_admin_producer_and_consumer_round_trip(stack_settings: Settings) -> None:
    topic = f"clients-{uuid4().hex[:8]}"
    admin = kafka_admin(stack_settings, role="test-admin")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    producer = kafka_producer(stack_settings, role="test-producer")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"AAPL", partition=1)
    finally:
        await producer.stop()

    consumer = kafka_consumer(stack_settings, role="test-consumer")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 1)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        received: list[bytes] = []
        deadline = time.monotonic() + DEADLINE_S
        while not received and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200)
            received.extend(record.value for record in batch.get(tp, []))
        assert received == [b"hello"]
    finally:
        await consumer.stop()


async def test_redis_client_answers_and_names_itself(stack_settings: Settings) -> None:
    client = redis_client(stack_settings, role="test-redis", decode_responses=True)
    try:
        assert await client.ping()
        # Operators find us in CLIENT LIST by this name.
        assert await client.client_getname() == client_name("test-redis")
        names = [entry["name"] for entry in await client.client_list()]
        assert client_name("test-redis") in names
    finally:
        await client.aclose()
