"""Handler isolation (DESIGN §3.5) and gap reports (§3.3) in a real worker."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from silvertine_streams.events import MarketDataEvent
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import Settings
from silvertine_streams.topics import handler_progress
from tests.handler_fixtures import ONCE_HASH, RECORDED_STREAM, SEEN_STREAM
from tests.helpers import async_wait_for
from tests.integration.test_pipeline import orders, ticks, wait_for_log
from tests.logcheck import assert_log_invariants, read_log
from tests.pipeline_support import WorkerPool, metrics_of


async def test_failing_and_hanging_handlers_are_cut_off_while_the_rest_flows(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    settings = pipeline_settings.model_copy(update={
        "handlers": ("tests.handler_fixtures:setup",),
        "handler_timeout_s": 0.2,
        "circuit_failure_threshold": 3,
        "circuit_reset_s": 600.0,
    })
    worker = workers.start(settings, PYTHONPATH=os.getcwd())
    order_events = orders(40)
    market_data = ticks(["AAPL", "MSFT"], 100)
    async with Publisher(settings) as publisher:
        await publisher.publish_many(order_events)
        await publisher.publish_many(market_data)

    # The recorder sees every order, although the two handlers before it fail.
    async def recorded() -> int | None:
        seen = await redis_client.xlen(SEEN_STREAM)
        return seen if seen >= len(order_events) else None

    await async_wait_for(recorded, timeout=60, message="recorder to see every order")
    entries = await redis_client.xrange(SEEN_STREAM)
    assert sorted(f[b"event_id"].decode() for _, f in entries) == sorted(
        e.event_id for e in order_events
    )
    assert len(await wait_for_log(redis_client, "order", 40, workers)) == 40
    assert len(await wait_for_log(redis_client, "market_data", 200, workers)) == 200

    samples = metrics_of(worker)
    assert samples[("silvertine_circuit_open", (("handler", "hang"),))] == 1
    assert samples[("silvertine_circuit_open", (("handler", "explode"),))] == 1
    assert samples[("silvertine_handler_failures_total",
                    (("handler", "hang"), ("kind", "timeout")))] == 3
    assert samples[("silvertine_handler_failures_total",
                    (("handler", "explode"), ("kind", "error")))] == 3
    assert samples[("silvertine_handler_skipped_total", (("handler", "hang"),))] == 37
    assert samples[("silvertine_handler_calls_total", (("handler", "record"),))] == 40
    # Each opened circuit is reported as a system event in the log.
    system = await wait_for_log(redis_client, "system", 2, workers)
    assert sorted(e["details"]["handler"] for e in system if e["kind"] == "circuit_open") == [
        "explode", "hang"]


async def test_a_sequence_gap_is_reported_once_as_a_system_event(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    worker = workers.start()
    sequences = [1, 2, 3, 7, 8, 9]
    events = [MarketDataEvent(symbol="AAPL", price=100.0, source="feed-x", sequence=n)
              for n in sequences]
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(events)

    logged = await wait_for_log(redis_client, "market_data", len(events), workers)
    assert [e["sequence"] for e in logged] == sequences
    system = await wait_for_log(redis_client, "system", 1, workers)
    gaps = [e for e in system if e["kind"] == "sequence_gap"]
    assert len(gaps) == 1, system
    assert gaps[0]["details"] == {
        "event_type": "market_data", "stream": "feed-x/AAPL", "expected": 4, "got": 7,
        "event_id": events[3].event_id,
    }
    assert gaps[0]["symbol"] == "AAPL"
    assert metrics_of(worker)[
        ("silvertine_sequence_gaps_total", (("event_type", "market_data"),))] == 1
    assert len(await read_log(redis_client, "system")) == 1


async def test_sequence_state_survives_a_worker_restart(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    events = ticks(["AAPL", "MSFT"], 60)
    first, rest = events[:100], events[100:]
    worker = workers.start()
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(first)
        await wait_for_log(redis_client, "market_data", len(first), workers)
        assert worker.stop() == 0
        # A worker that lost its high-water marks would take 51 as a fresh start,
        # and one that recovered stale marks would report a gap or drop events.
        restarted = workers.start()
        await publisher.publish_many(rest)
        logged = await wait_for_log(redis_client, "market_data", len(events), workers)
    assert sorted(e["event_id"] for e in logged) == sorted(e.event_id for e in events)
    assert_log_invariants(logged)
    assert not await read_log(redis_client, "system")
    assert "from_data" not in restarted.log_tail(400)
    assert metrics_of(restarted).get(
        ("silvertine_sequence_stale_total", (("event_type", "market_data"),)), 0.0) == 0


async def test_a_graceful_stop_hands_every_logged_event_to_handlers_exactly_once(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    """SIGTERM the worker while events flow, start another: every logged event was
    handled, none twice (the stopping worker finished and acknowledged its batch and
    gave the group up; the next one started where it ended)."""
    settings = pipeline_settings.model_copy(
        update={"handlers": ("tests.handler_fixtures:setup_recorders",)})
    env = {"PYTHONPATH": os.getcwd(), "SILVERTINE_OVERFLOW_POLICIES": "market_data=block"}
    first = workers.start(settings, **env)
    market_data = ticks([f"S{i}" for i in range(8)], 600)  # 4,800 ticks
    order_events = orders(100)
    async with Publisher(settings) as publisher:
        for start in range(0, len(market_data), 400):
            await publisher.publish_many(market_data[start:start + 400])
            if start == 1200:
                await async_wait_for(_seen_some(redis_client), timeout=60,
                                     message="the first worker's handlers to be at work")
                assert first.stop() == 0, first.log_tail()
                workers.start(settings, **env)
        await publisher.publish_many(order_events)
    logged = await wait_for_log(redis_client, "market_data", len(market_data), workers)
    await wait_for_log(redis_client, "order", len(order_events), workers)

    async def handled_everything() -> bool:
        acked = {k.decode(): int(v) for k, v in
                 (await redis_client.hgetall(handler_progress(settings.app_id))).items()}
        return acked.get("market_data") == len(market_data) and acked.get("order") == len(
            order_events)

    await async_wait_for(handled_everything, timeout=90,
                         message="the handler group to finish both logs")
    seen = Counter(f[b"event_id"].decode() for _, f in await redis_client.xrange(RECORDED_STREAM))
    expected = {e["event_id"] for e in logged} | {e.event_id for e in order_events}
    assert set(seen) == expected
    assert [k for k, n in seen.items() if n > 1] == [], "handled twice across a graceful stop"
    once = {k.decode(): int(v) for k, v in (await redis_client.hgetall(ONCE_HASH)).items()}
    assert once == {e.event_id: 1 for e in order_events}


def _seen_some(redis: Redis) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return int(await redis.xlen(RECORDED_STREAM)) > 0
    return check
