"""A worker restarted onto a backlog logs every event (single-event messages, both types)."""

from __future__ import annotations

from redis.asyncio import Redis

from silvertine_streams.events import Event, MarketDataEvent, OrderEvent, OrderSide
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import Settings
from tests.helpers import async_wait_for
from tests.logcheck import assert_log_invariants, read_log
from tests.pipeline_support import WorkerPool


def batch(tag: str, count: int) -> list[Event]:
    events: list[Event] = []
    for i in range(count):
        events.append(MarketDataEvent(symbol=f"S{i % 4}", price=10.0 + i, source=f"feed-{tag}"))
        if i % 4 == 0:
            events.append(OrderEvent(order_id=f"{tag}-{i}", symbol=f"S{i % 4}",
                                     side=OrderSide.BUY, quantity=1, source=f"oms-{tag}"))
    return events


async def test_a_worker_restarted_onto_a_backlog_logs_every_event(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    first, second = batch("a", 40), batch("b", 24)

    async def logged(market_data: int, orders: int) -> bool:
        return (await redis_client.xlen("log:market_data") >= market_data
                and await redis_client.xlen("log:order") >= orders)

    worker = workers.start()
    async with Publisher(pipeline_settings) as publisher:
        for event in first:
            await publisher.publish(event)
    await async_wait_for(lambda: logged(40, 10), timeout=60, message="first batch logged")
    assert worker.stop() == 0
    async with Publisher(pipeline_settings) as publisher:
        for event in second:  # produced while no worker runs: a backlog
            await publisher.publish(event)
    workers.start()
    try:
        await async_wait_for(lambda: logged(64, 16), timeout=60,
                             message="both batches logged after the restart")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from None
    market_data = await read_log(redis_client, "market_data")
    orders = await read_log(redis_client, "order")
    expected = {e.event_id for e in first + second}
    assert {e["event_id"] for e in market_data + orders} == expected
    assert_log_invariants(market_data)
    assert_log_invariants(orders)
