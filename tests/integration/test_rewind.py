"""Rewinding the workers' consumer group, end to end on the embedded stack.

A worker logs everything, is stopped, the group is rewound (to earliest or to
a time between two batches): each partition's committed offset is then exactly
its first message after that time, a restarted worker reprocesses from there
(its ``events_in`` and dedupe hits rise, it logs nothing new), and
``log:<type>`` does not change.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.events import Event, MarketDataEvent, OrderEvent, OrderSide
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.ops.rewind import WorkersRunning, rewind_group
from silvertine_streams.settings import Settings, settings_env
from silvertine_streams.topics import EVENT_TYPES, event_topic, log_stream
from tests.helpers import async_wait_for
from tests.pipeline_support import WorkerPool, metrics_of
from tests.workers import WorkerProcess

pytestmark = pytest.mark.integration


def run_ops(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an operations command as a user would (``silvertine <command>``)."""
    return subprocess.run([sys.executable, "-m", "silvertine_streams", *args],
                          env=settings_env(settings, os.environ), capture_output=True, text=True,
                          timeout=120)


def batch(tag: str, count: int) -> list[Event]:
    events: list[Event] = [
        MarketDataEvent(symbol=("AAPL", "MSFT", "NVDA", "TSLA")[i % 4], price=100.0 + i,
                        source=f"feed-{tag}")
        for i in range(count)
    ]
    events += [OrderEvent(order_id=f"{tag}-{i}", symbol="AAPL", side=OrderSide.SELL, quantity=1,
                          source="oms") for i in range(count // 4)]
    return events


async def snapshot(redis: Redis) -> dict[str, Any]:
    return {t: await redis.xrange(log_stream(t)) for t in ("market_data", "order")}


async def wait_logged(redis: Redis, workers: WorkerPool, events: list[Event]) -> None:
    ticks = sum(isinstance(e, MarketDataEvent) for e in events)

    async def done() -> bool:
        return (await redis.xlen(log_stream("market_data")) >= ticks
                and await redis.xlen(log_stream("order")) >= len(events) - ticks)

    try:
        await async_wait_for(done, timeout=60, message=f"{len(events)} events logged")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from None


def counter(worker: WorkerProcess, name: str) -> float:
    return sum(value for (sample, _labels), value in metrics_of(worker).items()
               if sample == name)


async def wait_reprocessed(worker: WorkerProcess, workers: WorkerPool, at_least: int) -> float:
    """Wait until the worker's events_in reaches ``at_least`` and then stays put; return it.

    The worker's exact count is not asserted: a worker restarted onto a backlog
    currently re-reads the last message of a partition or stalls on part of the
    backlog (seen with plain restarts too, without any rewind; a separate
    worker issue). The rewind's own offsets are checked exactly against Kafka
    instead. Once restarts are exact, assert ``== len(second)`` here.
    """
    async def settled() -> float | None:
        before = counter(worker, "silvertine_events_in_total")
        if before < at_least:
            return None
        await asyncio.sleep(2.0)  # reorder windows release strict streams after 2 s
        after = counter(worker, "silvertine_events_in_total")
        return after if after == before else None

    try:
        result = await async_wait_for(settled, timeout=120, interval=0.2,
                                      message=f"the restarted worker to reprocess {at_least}+")
    except AssertionError as exc:
        seen = counter(worker, "silvertine_events_in_total")
        raise AssertionError(f"{exc}; events_in {seen}\n{workers.logs()}") from None
    assert result is not None
    return result


async def first_offsets_of(settings: Settings, event_ids: set[str]) -> dict[tuple[str, int], int]:
    """Read the topics back: the first offset per partition holding one of ``event_ids``."""
    consumer = AIOKafkaConsumer(event_topic("market_data"), event_topic("order"),
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    firsts: dict[tuple[str, int], int] = {}
    seen = 0
    try:
        deadline = time.monotonic() + 20
        while seen < len(event_ids) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    assert record.value is not None
                    if json.loads(record.value)["event_id"] in event_ids:
                        seen += 1
                        key = (tp.topic, tp.partition)
                        firsts[key] = min(firsts.get(key, record.offset), record.offset)
    finally:
        await consumer.stop()
    assert seen == len(event_ids)
    return firsts


async def test_rewind_to_a_time_restarts_each_partition_at_its_first_later_message(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    first, second = batch("a", 40), batch("b", 24)
    worker = workers.start()
    async with Publisher(pipeline_settings) as publisher:
        for event in first:
            await publisher.publish(event)
        await asyncio.sleep(0.05)
        between = datetime.now(UTC)
        await asyncio.sleep(0.05)
        for event in second:
            await publisher.publish(event)
    await wait_logged(redis_client, workers, first + second)
    before = await snapshot(redis_client)

    refused = run_ops(pipeline_settings, "rewind", "--to", "earliest", "--yes")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "workers are running" in refused.stderr
    assert "Traceback" not in refused.stderr

    assert worker.stop() == 0
    done = run_ops(pipeline_settings, "rewind", "--to", between.isoformat(), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "committed" in done.stdout

    # Exact: every partition restarts at its first message produced after `between`.
    expected = await first_offsets_of(pipeline_settings, {e.event_id for e in second})
    probe = AIOKafkaConsumer(bootstrap_servers=pipeline_settings.kafka_bootstrap,
                             group_id=pipeline_settings.app_id, enable_auto_commit=False)
    await probe.start()
    try:
        committed = {key: await probe.committed(TopicPartition(*key)) for key in expected}
    finally:
        await probe.stop()
    assert committed == expected

    restarted = workers.start()
    reprocessed = await wait_reprocessed(restarted, workers, 1)
    assert counter(restarted, "silvertine_dedupe_hits_total") == reprocessed
    assert counter(restarted, "silvertine_events_logged_total") == 0
    assert await snapshot(redis_client) == before


async def test_rewind_to_earliest_reprocesses_everything_and_the_log_stays(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    events = batch("e", 60)
    worker = workers.start()
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(events)
    await wait_logged(redis_client, workers, events)
    before = await snapshot(redis_client)
    assert worker.stop() == 0

    dry = await rewind_group(pipeline_settings, "earliest", dry_run=True)
    assert not dry.committed
    plan = await rewind_group(pipeline_settings, "earliest")
    assert plan.committed
    assert {p.topic for p in plan.partitions} == {event_topic(t) for t in EVENT_TYPES}
    assert all(p.target == p.beginning for p in plan.partitions)
    assert sum(p.to_reprocess for p in plan.partitions) >= 2  # envelopes, not events

    restarted = workers.start()
    reprocessed = await wait_reprocessed(restarted, workers, 1)
    assert counter(restarted, "silvertine_dedupe_hits_total") == reprocessed
    assert counter(restarted, "silvertine_events_logged_total") == 0
    assert await snapshot(redis_client) == before


async def test_the_api_refuses_while_a_worker_runs(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    workers.start()
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish(MarketDataEvent(symbol="AAPL", price=1.0, source="f"))
    await wait_logged(redis_client, workers, [MarketDataEvent(symbol="X", price=1.0)])

    with pytest.raises(WorkersRunning) as refused:
        await rewind_group(pipeline_settings, "latest")
    assert refused.value.holders  # the worker renewing its ingress lease is named
    assert refused.value.members


async def test_tansu_answers_offsets_for_times_wrongly_and_rewind_corrects_it(
    pipeline_settings: Settings, embedded_stack: EmbeddedStack | None
) -> None:
    """Documents the broker bug the rewind works around (embedded Tansu only)."""
    if embedded_stack is None:
        pytest.skip("about the embedded Tansu broker; SILVERTINE_KAFKA_URL points elsewhere")
    async with Publisher(pipeline_settings) as publisher:
        for i in range(12):
            await publisher.publish(OrderEvent(order_id=f"t-{i}", symbol="AAPL",
                                               side=OrderSide.BUY, quantity=1, source="oms"))
    future_ms = int(time.time() * 1000) + 3_600_000
    consumer = AIOKafkaConsumer(bootstrap_servers=pipeline_settings.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(event_topic("order"), _partition_of("AAPL", pipeline_settings))
        answer = (await consumer.offsets_for_times({tp: future_ms}))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    # Kafka answers None (no message that late); Tansu 0.6 answers offset 0.
    assert answer is not None and answer.offset == 0 and end == 12

    plan = await rewind_group(pipeline_settings, datetime.fromtimestamp(future_ms / 1000, UTC),
                              types=["order"], dry_run=True)
    row = next(p for p in plan.partitions if p.partition == tp.partition)
    assert row.target == row.end == 12
    assert row.method.startswith("searched (broker answered 0)")
    assert any("offsets-for-times answer was wrong" in note for note in plan.notes)


def _partition_of(symbol: str, settings: Settings) -> int:
    from silvertine_streams.kafka.publisher import partition_for

    return partition_for(symbol.encode(), settings.partitions)


async def test_rewind_dry_run_command_shows_the_plan(
    pipeline_settings: Settings, redis_client: Redis
) -> None:
    result = run_ops(pipeline_settings, "rewind", "--to", "latest", "--type", "fill",
                     "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "silvertine.fill" in result.stdout and "dry run" in result.stdout


async def test_lease_watch_tells_a_stopped_worker_from_a_running_one(
    stack_settings: Settings, redis_client: Redis
) -> None:
    from silvertine_streams.ops.rewind import live_lease_holders
    from silvertine_streams.topics import ingress_lease

    assert stack_settings.redis_url is not None
    # A stopped worker's lease: it only runs out.
    await redis_client.set(ingress_lease("order"), "ghost-1", px=400)
    started = time.monotonic()
    assert await live_lease_holders(stack_settings, lease_ms=400) == []
    assert time.monotonic() - started < 3.0

    # A running worker renews its lease.
    async def renew() -> None:
        while True:
            await redis_client.set(ingress_lease("fill"), "host-42", px=400)
            await asyncio.sleep(0.1)

    renewing = asyncio.create_task(renew())
    try:
        assert await live_lease_holders(stack_settings, lease_ms=400) == ["host-42"]
    finally:
        renewing.cancel()
