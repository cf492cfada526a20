"""Measurements shared by scenarios: counting a topic, resetting Redis, timing a child."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from bench.harness import BenchContext, BenchError, Child, wait_for_mark, wait_for_xlen
from bench.profiling import Sampler
from bench.report import Run


async def count_messages(ctx: BenchContext, topic: str, until: int | None = None,
                         idle_s: float = 1.0) -> int:
    """Count the messages of ``topic`` by reading it from the beginning.

    Tansu's ``ListOffsets`` answers are not record counts (an end offset of 365
    for 375 records was seen), so the bench counts by consuming. Stops at
    ``until`` messages or after ``idle_s`` without any.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=ctx.settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return 0
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        count = 0
        while until is None or count < until:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batches:
                break
            count += sum(len(messages) for messages in batches.values())
        return count
    finally:
        await consumer.stop()


async def reset_redis(ctx: BenchContext) -> None:
    """Empty Redis and compact its AOF, so every run starts from the same state."""
    redis = ctx.redis()
    try:
        await redis.flushdb()
        await redis.bgrewriteaof()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = await redis.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get(
                    "aof_rewrite_scheduled"):
                break
            await asyncio.sleep(0.05)
        await redis.config_resetstat()
    finally:
        await redis.aclose()


async def redis_command_stats(ctx: BenchContext) -> str:
    """Where Redis spent its command time since the reset: ``cmd calls×µs/call``, top 3."""
    redis = ctx.redis()
    try:
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    rows = sorted(((k.removeprefix("cmdstat_"), v) for k, v in stats.items()
                   if isinstance(v, dict)), key=lambda kv: -float(kv[1].get("usec", 0)))
    return " ".join(f"{name} {int(v['calls'])}×{float(v['usec_per_call']):.0f}µs"
                    for name, v in [r for r in rows if r[0] not in ("info", "xlen", "config")][:3])


async def redis_forks(ctx: BenchContext) -> int:
    redis = ctx.redis()
    try:
        return int((await redis.info("stats")).get("total_forks", 0))
    finally:
        await redis.aclose()


async def wait_for_hash_count(redis: Redis, key: str, field: str, count: int, child: Child,
                              timeout_s: float, interval_s: float = 0.005) -> float:
    """Poll ``HGET key field`` until it reaches ``count``; return ``time.time()`` when seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = int(await redis.hget(key, field) or 0)
        if last >= count:
            return time.time()
        child.check_alive(f"counting {key} {field} ({last}/{count})")
        if time.monotonic() > deadline:
            raise BenchError(f"{key} {field} was {last}/{count} after {timeout_s:g}s; "
                             f"{child.name} log:\n{child.log_tail()}")
        await asyncio.sleep(interval_s)


async def measure_until_xlen(
    ctx: BenchContext, child: Child, mark: Path, stream: str, events: int,
    sampler_output: Path | None = None, handled: tuple[str, str] | None = None,
) -> tuple[Run, Sampler | None]:
    """Start ``child``, time it from its mark to ``XLEN stream == events``.

    Also records each process's CPU seconds over that window, the Redis commands
    that took the time, and AOF rewrites (forks) that happened during it; checks
    the stream ends with exactly ``events`` entries. ``sampler_output``: attach
    py-spy to the child for the measured window. ``handled``: ``(hash, field)``
    of a handler group's acknowledged count; the clock then runs until it too
    reaches ``events`` (the log's own finish is kept as ``log_done_s``).
    """
    redis = ctx.redis()
    sampler: Sampler | None = None
    forks_before = await redis_forks(ctx)
    try:
        child.start()
        started = await wait_for_mark(mark, child)
        cpu0, servers0 = child.cpu(), ctx.server_cpu()
        if sampler_output is not None:
            sampler = Sampler(child.pid, sampler_output).start()
        timeout = max(60.0, events / 2_000)
        finished = await wait_for_xlen(redis, stream, events, child, timeout)
        log_done = finished
        if handled is not None:
            finished = await wait_for_hash_count(redis, *handled, events, child, timeout)
        cpu1, servers1 = child.cpu(), ctx.server_cpu()
        if sampler is not None:
            sampler.stop()
        cpu = {"worker": None if cpu0 is None or cpu1 is None else cpu1 - cpu0}
        for name in servers0:
            a, b = servers0[name], servers1[name]
            cpu[name] = None if a is None or b is None else b - a
        run = Run(events=events, seconds=finished - started, cpu_s=cpu, ended_at=finished)
        if handled is not None:
            run.extra["log_done_s"] = f"{log_done - started:.2f}"
        await asyncio.sleep(0.3)
        final = int(await redis.xlen(stream))
        if final != events:
            raise BenchError(f"{stream} holds {final} entries, expected exactly {events}")
        forks = await redis_forks(ctx) - forks_before
        if forks:
            run.extra["redis_forks"] = forks
        run.extra["redis"] = await redis_command_stats(ctx)
        return run, sampler
    finally:
        if sampler is not None:
            sampler.stop()
        await redis.aclose()
