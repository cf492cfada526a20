"""Ordering, overload and backpressure in a real worker (DESIGN §3.3, §3.4)."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.events import Event, MarketDataEvent, OrderEvent, OrderSide
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import Settings
from silvertine_streams.topics import INGRESS_GROUP, ingress_stream
from tests.helpers import async_wait_for
from tests.integration.test_pipeline import ticks, wait_for_log
from tests.logcheck import assert_log_invariants, read_dlq, read_log
from tests.pipeline_support import WorkerPool, metrics_of


def order(sequence: int, symbol: str = "AAPL") -> OrderEvent:
    return OrderEvent(order_id=f"o-{symbol}-{sequence}", symbol=symbol, side=OrderSide.BUY,
                      quantity=1, source="oms-1", sequence=sequence)


async def publish_one_by_one(settings: Settings, events: list[Event]) -> None:
    """One Kafka message per event, in this order (same symbol: same partition)."""
    async with Publisher(settings) as publisher:
        for event in events:
            await publisher.publish(event)


async def test_out_of_order_orders_are_logged_in_order_with_one_report_per_gap(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    settings = pipeline_settings.model_copy(update={"reorder_wait_strict_s": 0.5})
    worker = workers.start(settings)
    # 3 and 5 overtake 2 and 4; 7 never comes before the window closes.
    scrambled = [order(n) for n in (1, 3, 2, 5, 4, 6, 8, 9)]
    await publish_one_by_one(settings, scrambled)

    logged = await wait_for_log(redis_client, "order", 8, workers)
    assert [e["sequence"] for e in logged] == [1, 2, 3, 4, 5, 6, 8, 9]
    assert_log_invariants(logged)
    system = await wait_for_log(redis_client, "system", 1, workers)
    gaps = [e for e in system if e["kind"] == "sequence_gap"]
    assert [(g["details"]["expected"], g["details"]["got"]) for g in gaps] == [(7, 8)]
    assert gaps[0]["severity"] == "critical"  # orders are strict

    # 7 arrives after its gap was reported: a dead letter, not an out-of-order log entry.
    late = order(7)
    future = order(10).with_changes(timestamp=datetime.now(UTC) + timedelta(hours=1))
    await publish_one_by_one(settings, [late, future])
    letters = await async_wait_for(lambda: _dlq_with(redis_client, 2), timeout=30,
                                   message="the late and the future order in the dlq")
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons[0].startswith("late: sequence 7 of oms-1/AAPL"), reasons
    assert reasons[1].startswith("timestamp: "), reasons
    assert len(await read_log(redis_client, "order")) == 8
    assert len([e for e in await read_log(redis_client, "system")
                if e["kind"] == "sequence_gap"]) == 1
    assert metrics_of(worker)[("silvertine_sequence_gaps_total", (("event_type", "order"),))] == 1


async def _dlq_with(redis: Redis, count: int) -> list[dict[str, str]] | None:
    letters = await read_dlq(redis)
    return letters if len(letters) >= count else None


async def test_market_data_is_conflated_under_overload_and_every_shed_tick_counted(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    # Overloaded as soon as more than one message waits: the produced backlog is.
    settings = pipeline_settings.model_copy(update={
        "overload_high_lag": 1, "overload_low_lag": 0, "envelope_max_events": 20})
    symbols = [f"S{i}" for i in range(8)]
    events = ticks(symbols, 100)
    async with Publisher(settings) as publisher:
        await publisher.publish_many(events)
    worker = workers.start(settings)

    def accounted() -> tuple[float, float]:
        samples = metrics_of(worker)
        shed = sum(v for (name, labels), v in samples.items()
                   if name == "silvertine_shed_events_total"
                   and ("event_type", "market_data") in labels)
        logged = samples.get(("silvertine_events_logged_total",
                              (("event_type", "market_data"),)), 0.0)
        return shed, logged

    async def all_accounted() -> tuple[float, float] | None:
        shed, logged = accounted()
        return (shed, logged) if shed + logged >= len(events) else None

    result = await async_wait_for(all_accounted, timeout=60,
                                  message="every tick logged or counted as shed")
    assert result is not None
    shed, logged = result
    assert shed > 0, "nothing was conflated although the worker started behind"
    assert shed + logged == len(events)
    log = await read_log(redis_client, "market_data")
    assert len(log) == logged
    assert_log_invariants(log)
    # Conflation keeps the latest tick of each symbol: the last one always survives.
    assert {e["symbol"]: e["sequence"] for e in log} == dict.fromkeys(symbols, 100)
    assert not await read_dlq(redis_client)
    assert not [e for e in await read_log(redis_client, "system")
                if e["kind"] == "sequence_gap"], "shed ticks must not look like gaps"


async def test_a_stalled_redis_holds_intake_back_and_loses_nothing(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool,
    embedded_stack: EmbeddedStack | None,
) -> None:
    assert embedded_stack is not None, "this test stalls the embedded redis-server"
    worker = workers.start()
    first = ticks(["AAPL", "MSFT"], 50)
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(first)
        await wait_for_log(redis_client, "market_data", len(first), workers)
        embedded_stack.signal_server("redis", signal.SIGSTOP)
        try:
            stalled = [MarketDataEvent(symbol=s, price=1.0 + i, source="feed-late", sequence=i)
                       for i in range(1, 201) for s in ("AAPL", "MSFT")]
            await publisher.publish_many(stalled)
            # While Redis is stalled the worker must hold the messages, not drop them.
            await asyncio.sleep(2.0)  # the stall's length, not a synchronisation
            assert worker.alive()
        finally:
            embedded_stack.signal_server("redis", signal.SIGCONT)
    logged = await wait_for_log(redis_client, "market_data", len(first) + len(stalled), workers)
    assert len(logged) == len(first) + len(stalled)
    assert_log_invariants(logged)
    assert worker.alive()


async def test_the_publisher_waits_while_the_engine_is_behind_and_not_after(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    settings = pipeline_settings.model_copy(
        update={"publish_max_lag": 5, "publish_max_backlog": 0})
    events = ticks(["AAPL"], 9)
    async with Publisher(settings, check_every_s=0.0) as publisher:
        for event in events:  # no worker yet: every message adds to the group's lag
            await publisher.publish(event)
        assert publisher.throttled_s > 0, "the publisher never waited although lag > bound"
        workers.start(settings)
        await wait_for_log(redis_client, "market_data", len(events), workers)

        async def caught_up() -> bool:
            return await publisher.wait_for_capacity() == 0.0

        # Offsets are committed every few seconds; then the lag is back under the bound.
        await async_wait_for(caught_up, timeout=30, message="the throttle to release")


async def test_a_critical_worker_group_consumes_and_mirrors_only_its_types(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    critical = pipeline_settings.model_copy(update={
        "app_id": f"{pipeline_settings.app_id}-critical", "event_types": ("order", "fill")})
    bulk = pipeline_settings.model_copy(update={"event_types": ("market_data", "signal", "system")})
    quotes = ticks(["AAPL", "MSFT"], 20)
    orders_by_kafka = [order(n) for n in range(1, 6)]
    orders_by_ingress = [order(n, "MSFT") for n in range(1, 6)]
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(quotes + orders_by_kafka)
        await publisher.publish_many_to_ingress(orders_by_ingress + quotes[:4])

    workers.start(critical)
    logged = await wait_for_log(redis_client, "order", 10, workers)
    assert {e["event_id"] for e in logged} == {
        e.event_id for e in orders_by_kafka + orders_by_ingress}
    # The critical group neither consumed market data nor mirrored its ingress stream.
    assert await redis_client.xlen("log:market_data") == 0
    assert await redis_client.xlen(ingress_stream("market_data")) == 4
    groups = await redis_client.xinfo_groups(ingress_stream("market_data"))
    assert INGRESS_GROUP.encode() not in [g["name"] for g in groups]  # no mirror read it

    workers.start(bulk)
    market_data = await wait_for_log(redis_client, "market_data", 40, workers)
    assert {e["event_id"] for e in market_data} == {e.event_id for e in quotes}
    assert_log_invariants(market_data)
    assert len(await read_log(redis_client, "order")) == 10
