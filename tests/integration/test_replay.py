"""Replay of the canonical log, end to end on the embedded stack.

A real worker records live traffic into ``log:<type>``; the tests replay it
through the Python API and the ``replay`` command and check counts, filters,
pacing, the replay marking, and that nothing replayed re-enters the log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from silvertine_streams.events import (
    Event,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    SignalEvent,
    content_fingerprint,
    encode_event,
)
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.replay import replay
from silvertine_streams.replay.reader import entry_datetime
from silvertine_streams.settings import Settings, settings_env
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord
from silvertine_streams.topics import log_stream
from tests.helpers import async_wait_for
from tests.pipeline_support import WorkerPool

pytestmark = pytest.mark.integration

SYMBOLS = ("AAPL", "MSFT", "NVDA")


def run_ops(settings: Settings, *args: str, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run an operations command as a user would (``silvertine <command>``)."""
    return subprocess.run([sys.executable, "-m", "silvertine_streams", *args],
                          env=settings_env(settings, os.environ),
                          capture_output=True, text=True, timeout=120, input=stdin)


async def log_entries(redis: Redis, event_type: str) -> list[tuple[str, dict[str, Any]]]:
    entries: Any = await redis.xrange(log_stream(event_type))
    return [(entry_id.decode(), json.loads(fields[b"event"])) for entry_id, fields in entries]


async def _logged(redis: Redis, event_type: str) -> bool:
    return bool(await redis.xlen(log_stream(event_type)))


async def record_live(settings: Settings, redis: Redis, workers: WorkerPool,
                      seconds: float = 2.0, per_second: int = 10) -> list[Event]:
    """Publish ticks (and an order every 5th) live over ``seconds``; wait until all are logged."""
    workers.start()
    sent: list[Event] = []
    async with Publisher(settings) as publisher:
        # Live means the worker logs as we publish: wait until it logs a warm-up
        # signal, or it would find the whole recording waiting and log it in one batch.
        await publisher.publish(SignalEvent(symbol="AAPL", strategy_id="warm-up"))
        await async_wait_for(lambda: _logged(redis, "signal"), timeout=60,
                             message="the worker to log the warm-up signal")
        for i in range(int(seconds * per_second) + 1):
            tick = MarketDataEvent(symbol=SYMBOLS[i % 3], price=95.0 + i, volume=1.0,
                                   source="feed-live")
            await publisher.publish(tick)
            sent.append(tick)
            if i % 5 == 0:
                order = OrderEvent(order_id=f"o-{i}", symbol=SYMBOLS[i % 3],
                                   side=OrderSide.BUY, quantity=10 + i, source="oms")
                await publisher.publish(order)
                sent.append(order)
            await asyncio.sleep(1 / per_second)
    ticks = sum(isinstance(e, MarketDataEvent) for e in sent)

    async def all_logged() -> bool:
        return (await redis.xlen(log_stream("market_data")) >= ticks
                and await redis.xlen(log_stream("order")) >= len(sent) - ticks)

    try:
        await async_wait_for(all_logged, timeout=60, message="live traffic logged")
    except AssertionError as exc:
        lengths = {t: await redis.xlen(log_stream(t)) for t in ("market_data", "order")}
        raise AssertionError(f"{exc}; logged {lengths} of {ticks} ticks, "
                             f"{len(sent) - ticks} orders\n{workers.logs()}") from None
    return sent


async def test_replay_counts_filters_marks_and_merges_exactly(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    sent = await record_live(pipeline_settings, redis_client, workers)
    ticks = [e for e in sent if isinstance(e, MarketDataEvent)]
    logged_ticks = await log_entries(redis_client, "market_data")
    logged_orders = await log_entries(redis_client, "order")

    got: list[Event] = []
    summary = await replay(redis_client, ["market_data"], to=got.append)
    assert summary.replayed == len(ticks) == len(logged_ticks)
    assert [e.event_id for e in got] == [event["event_id"] for _, event in logged_ticks]
    assert all(e.metadata["replay"] is True for e in got)
    assert [e.metadata["replayed_from"] for e in got] == [entry_id for entry_id, _ in logged_ticks]

    # Filters: exact against what the log holds.
    got = []
    summary = await replay(redis_client, ["market_data"], symbols=["AAPL", "NVDA"],
                           where="price >= 100 and volume == 1", to=got.append)
    expected = [event["event_id"] for _, event in logged_ticks
                if event["symbol"] in ("AAPL", "NVDA") and event["price"] >= 100]
    assert [e.event_id for e in got] == expected
    assert summary.filtered == len(logged_ticks) - len(expected)

    # since/until select by log time: [since, until).
    # A batch logs many ticks in one millisecond: the window ends at the first tick
    # logged in a later millisecond than its start, so it is never empty.
    since = entry_datetime(logged_ticks[5][0])
    until = next((entry_datetime(entry_id) for entry_id, _ in logged_ticks[6:]
                  if entry_datetime(entry_id) > since), None)
    assert until is not None, "every tick after the 6th was logged in the same millisecond"
    got = []
    await replay(redis_client, ["market_data"], since=since, until=until, to=got.append)
    expected = [event["event_id"] for entry_id, event in logged_ticks
                if since <= entry_datetime(entry_id) < until]
    assert [e.event_id for e in got] == expected and expected

    # Two types merge: everything once, each log in its own order.
    got = []
    summary = await replay(redis_client, ["market_data", "order"], speed=100.0, to=got.append)
    assert summary.replayed == len(logged_ticks) + len(logged_orders)
    assert [e.event_id for e in got if e.event_type.value == "order"] == [
        event["event_id"] for _, event in logged_orders]
    assert [e.event_id for e in got if e.event_type.value == "market_data"] == [
        event["event_id"] for _, event in logged_ticks]


async def test_speed_2_replays_a_recorded_window_in_about_half_its_span(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    await record_live(pipeline_settings, redis_client, workers, seconds=2.0)

    delivered: list[float] = []
    started = time.monotonic()
    summary = await replay(redis_client, ["market_data", "order"], speed=2,
                           to=lambda event: delivered.append(time.monotonic()))
    took = delivered[-1] - started

    assert summary.span_s == pytest.approx(2.0, abs=0.5)
    ratio = took / summary.span_s
    assert 0.35 < ratio < 0.8, f"took {took:.2f}s for a {summary.span_s:.2f}s span"


async def test_replayed_events_never_reenter_the_log(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    await record_live(pipeline_settings, redis_client, workers, seconds=0.5)
    before = await log_entries(redis_client, "market_data")

    refused = run_ops(pipeline_settings, "replay", "--type", "market_data", "--to",
                      "topic:silvertine.market_data", "--yes")
    assert refused.returncode == 2, refused.stderr
    assert "refusing to replay into 'silvertine.market_data'" in refused.stderr
    assert "Traceback" not in refused.stderr

    done = run_ops(pipeline_settings, "replay", "--type", "market_data", "--to",
                   "topic:replay.market_data", "--yes", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"replayed {len(before)} events" in done.stderr

    consumer = AIOKafkaConsumer("replay.market_data",
                                bootstrap_servers=pipeline_settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        values: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while len(values) < len(before) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            values.extend(json.loads(r.value) for rs in batch.values() for r in rs)
    finally:
        await consumer.stop()
    assert sorted(v["event_id"] for v in values) == sorted(e["event_id"] for _, e in before)
    assert all(v["metadata"]["replay"] is True for v in values)
    # The worker keeps running the whole time; the log did not change.
    assert await log_entries(redis_client, "market_data") == before


async def test_replay_command_prints_json_lines_and_a_summary(
    pipeline_settings: Settings, redis_client: Redis
) -> None:
    events = [MarketDataEvent(symbol=SYMBOLS[i % 3], price=90.0 + i, source="f", sequence=i)
              for i in range(30)]
    await CanonicalLogSink(redis_client, "market_data").write(
        [LogRecord(e.event_id, content_fingerprint(e), encode_event(e), f"t/0/{i}#0")
         for i, e in enumerate(events)])

    result = run_ops(pipeline_settings, "replay", "--type", "market_data", "--symbol", "AAPL",
                     "--where", "price > 100", "--speed", "max")

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [e.event_id for e in events if e.symbol == "AAPL" and e.price > 100]
    assert [line["event_id"] for line in lines] == expected
    assert all(line["metadata"]["replay"] for line in lines)
    assert f"replayed {len(expected)} events (filtered {30 - len(expected)})" in result.stderr

    bad = run_ops(pipeline_settings, "replay", "--where", "__import__('os')")
    assert bad.returncode == 2 and "function call is not allowed" in bad.stderr


async def test_max_speed_replay_rate(redis_client: Redis) -> None:
    """Measure replay from the log at max speed (reported; the floor only catches collapse)."""
    total, batch = 100_000, 5000
    sink = CanonicalLogSink(redis_client, "market_data")
    for start in range(0, total, batch):
        chunk = [MarketDataEvent(symbol=SYMBOLS[i % 3], price=100.0 + i % 7, volume=1.0,
                                 source="bench", sequence=i) for i in range(start, start + batch)]
        await sink.write([LogRecord(e.event_id, content_fingerprint(e), encode_event(e),
                                    f"silvertine.market_data/0/{e.sequence}#0") for e in chunk])
    counted = 0

    def count(event: Event) -> None:
        nonlocal counted
        counted += 1

    summary = await replay(redis_client, ["market_data"], to=count)

    assert counted == summary.replayed == total
    print(f"\nreplay at max speed: {summary.rate:,.0f} events/s ({total:,} events)")
    assert summary.rate > 10_000


async def test_replay_to_handlers_runs_them_isolated_in_the_replaying_process(
    pipeline_settings: Settings, redis_client: Redis
) -> None:
    from tests.handler_fixtures import SEEN_STREAM

    orders = [OrderEvent(order_id=f"h-{i}", symbol="AAPL", side=OrderSide.BUY, quantity=1,
                         source="oms", sequence=i + 1) for i in range(8)]
    await CanonicalLogSink(redis_client, "order").write(
        [LogRecord(e.event_id, content_fingerprint(e), encode_event(e), f"t/0/{i}#0")
         for i, e in enumerate(orders)])
    fast = pipeline_settings.model_copy(update={"handler_timeout_s": 0.05})

    result = run_ops(fast, "replay", "--type", "order", "--to", "handlers",
                     "--handlers", "tests.handler_fixtures:setup", "--yes", "--no-progress")

    assert result.returncode == 0, result.stderr
    seen: Any = await redis_client.xrange(SEEN_STREAM)
    assert [fields[b"event_id"].decode() for _, fields in seen] == [e.event_id for e in orders]
    assert "handler record: 8 calls, 0 failed" in result.stderr
    assert "handler explode:" in result.stderr and "replayed 8 events" in result.stderr
    assert await redis_client.xlen(log_stream("order")) == len(orders)  # nothing re-logged
