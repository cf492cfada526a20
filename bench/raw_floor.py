"""The raw floor: aiokafka consume → pipelined XADD, no framework, no checks.

It reads the same topic as the pipeline (batch envelopes), splits each
envelope into its event JSON objects without decoding them (msgspec ``Raw``),
and XADDs every event to a Redis stream, one pipelined round trip per fetched
batch. No consumer group (partitions assigned directly, from the beginning),
no validation, no dedupe, no sequencing, no commits: the least work that moves
these events from Kafka to a Redis stream with the stack's own clients.

Run as ``python -m bench.raw_floor`` with ``BENCH_*`` variables (see :func:`main`);
it exits once it has written ``BENCH_EVENTS`` events, or runs until SIGTERM when
that is 0 (the latency scenario's baseline). ``BENCH_FETCH_WAIT_MS`` is the
consumer's fetch wait (default 10, the product's default).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition


async def run(
    *, bootstrap: list[str], topic: str, partitions: int, redis_url: str, stream: str,
    events: int, mark_file: str | None, fetch_wait_ms: int = 10,
) -> None:
    split = msgspec.json.Decoder(list[msgspec.Raw]).decode
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=fetch_wait_ms,
    )
    redis = aioredis.Redis.from_url(redis_url)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        written = 0
        marked = mark_file is None
        while events == 0 or written < events:
            batches = await consumer.getmany(timeout_ms=100)
            if not batches:
                continue
            if not marked:
                marked = True
                assert mark_file is not None
                Path(mark_file).write_text(repr(time.time()))
            pipe = redis.pipeline(transaction=False)
            xadd = pipe.xadd
            for messages in batches.values():
                for message in messages:
                    value = message.value
                    if value[:1] == b"[":
                        for raw in split(value):
                            xadd(stream, {"event": bytes(raw)})
                            written += 1
                    else:
                        xadd(stream, {"event": value})
                        written += 1
            await pipe.execute()
    finally:
        await consumer.stop()
        await redis.aclose()


def main() -> None:
    env = os.environ
    asyncio.run(run(
        bootstrap=env["BENCH_KAFKA_URL"].removeprefix("kafka://").split(";"),
        topic=env["BENCH_TOPIC"],
        partitions=int(env.get("BENCH_PARTITIONS", "4")),
        redis_url=env["BENCH_REDIS_URL"],
        stream=env["BENCH_STREAM"],
        events=int(env["BENCH_EVENTS"]),
        mark_file=env.get("BENCH_MARK_FILE"),
        fetch_wait_ms=int(env.get("BENCH_FETCH_WAIT_MS", "10")),
    ))


if __name__ == "__main__":
    main()
