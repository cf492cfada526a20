"""The baseline: a plain Faust agent doing one awaited XADD per event.

This is what a first Faust version of the engine looks like: one event per
Kafka message, ``async for value in stream: await redis.xadd(...)``. No
validation, no dedupe, no tables, so it is the *best case* of that design;
its cost is Faust's per-message machinery plus one Redis round trip per event.

Run as a worker: ``python -m bench.plain_agent`` with ``BENCH_*`` variables
(see :func:`main`); stop it with SIGTERM.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import faust
import redis.asyncio as aioredis


def create_app(
    *, app_id: str, broker: str, redis_url: str, topic: str, stream: str, datadir: Path,
    web_port: int, partitions: int, mark_file: str | None,
) -> faust.App:
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=broker,
        datadir=str(datadir),
        web_host="127.0.0.1",
        web_port=web_port,
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        # Tansu joins a group only after the rebalance timeout (DESIGN §4).
        broker_rebalance_timeout=2.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        env_prefix="BENCH_PLAIN_FAUST_",
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw",
                       partitions=partitions)
    redis = aioredis.Redis.from_url(redis_url)
    marked = mark_file is None
    log_key = stream

    @app.agent(source, name="bench.plain_agent")
    async def plain(stream: Any) -> None:
        nonlocal marked
        async for value in stream:
            if not marked:
                marked = True
                assert mark_file is not None
                Path(mark_file).write_text(repr(time.time()))
            await redis.xadd(log_key, {"event": value})

    return app


def main() -> None:
    env = os.environ
    app = create_app(
        app_id=env["BENCH_APP_ID"],
        broker=env["BENCH_KAFKA_URL"],
        redis_url=env["BENCH_REDIS_URL"],
        topic=env["BENCH_TOPIC"],
        stream=env["BENCH_STREAM"],
        datadir=Path(env["BENCH_DATADIR"]),
        web_port=int(env["BENCH_WEB_PORT"]),
        partitions=int(env.get("BENCH_PARTITIONS", "4")),
        mark_file=env.get("BENCH_MARK_FILE"),
    )
    faust.Worker(app, loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main()
