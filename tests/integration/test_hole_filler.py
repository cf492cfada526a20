"""silvertine_streams.agents.holes.HoleFiller against a real broker: it reads exactly
the missing offset range of one partition, and returns what it found when the
range runs past the end.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from silvertine_streams.agents.holes import HoleFiller
from silvertine_streams.settings import Settings

pytestmark = pytest.mark.integration

TOPIC = "t-holes"


@pytest.fixture
async def ten_messages(fresh_kafka: Settings) -> AsyncIterator[Settings]:
    """Offsets 0..9 on partition 1 of ``TOPIC`` (and noise on partition 0)."""
    producer = AIOKafkaProducer(bootstrap_servers=fresh_kafka.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(TOPIC, f"m{n}".encode(), partition=1)
            await producer.send_and_wait(TOPIC, f"other{n}".encode(), partition=0)
    finally:
        await producer.stop()
    yield fresh_kafka


async def test_it_reads_exactly_the_missing_range(ten_messages: Settings) -> None:
    filler = HoleFiller(ten_messages, timeout_s=10.0)
    try:
        records = await filler.fetch(TOPIC, 1, 3, 7)
        assert [(r.partition, r.offset, r.value) for r in records] == [
            (1, n, f"m{n}".encode()) for n in (3, 4, 5, 6)]
        # The same filler serves the next hole, on another partition too.
        again = await filler.fetch(TOPIC, 0, 0, 2)
        assert [r.value for r in again] == [b"other0", b"other1"]
    finally:
        await filler.close()


async def test_a_range_past_the_end_returns_what_exists_after_the_timeout(
    ten_messages: Settings,
) -> None:
    filler = HoleFiller(ten_messages, timeout_s=1.0)
    try:
        started = time.monotonic()
        records = await filler.fetch(TOPIC, 1, 8, 15)
        assert [r.offset for r in records] == [8, 9]
        assert time.monotonic() - started < 5.0  # bounded by the timeout, not hanging
    finally:
        await filler.close()


async def test_a_closed_filler_starts_again_on_the_next_hole(ten_messages: Settings) -> None:
    filler = HoleFiller(ten_messages, timeout_s=10.0)
    try:
        assert [r.offset for r in await filler.fetch(TOPIC, 1, 0, 1)] == [0]
        await filler.close()
        assert [r.offset for r in await filler.fetch(TOPIC, 1, 9, 10)] == [9]
    finally:
        await filler.close()
