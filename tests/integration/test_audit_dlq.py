"""Audit and the DLQ tools, end to end on the embedded stack.

A real worker processes good and bad events on both ingress paths; the tests
audit them (from the indexes, and by the bounded scan beyond the dedupe
window), and list, requeue and purge dead letters: a requeued event whose
cause was fixed reaches the log exactly once, one that fails again comes back
with its new reason, nothing is lost.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from silvertine_streams.events import (
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    content_fingerprint,
    decode_event,
    encode_event,
)
from silvertine_streams.kafka.publisher import Publisher, partition_for
from silvertine_streams.ops.audit import audit
from silvertine_streams.ops.dead_letters import purge, requeue, requeue_payload
from silvertine_streams.replay.dead_letters import DeadLetterEntry, list_dead_letters
from silvertine_streams.settings import Settings
from silvertine_streams.topics import DLQ_INDEX, DLQ_STREAM, event_topic, ingress_stream, log_stream
from tests.helpers import async_wait_for
from tests.ops_support import run_ops
from tests.pipeline_support import WorkerPool

pytestmark = pytest.mark.integration

BAD_PRICE = b'{"event_type":"market_data","event_id":"neg-1","symbol":"AAPL","price":-1.0}'
ORDER_ON_WRONG_TOPIC = encode_event(OrderEvent(
    event_id="lost-order", order_id="o-lost", symbol="MSFT", side=OrderSide.BUY, quantity=3,
    source="oms"))


async def produce_raw(settings: Settings, topic: str, values: list[bytes],
                      key: bytes = b"AAPL") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def wait_until(redis: Redis, workers: WorkerPool, what: str,
                     lengths: dict[str, int]) -> None:
    async def reached() -> bool:
        return all([await redis.xlen(key) >= n for key, n in lengths.items()])

    try:
        await async_wait_for(reached, timeout=60, message=what)
    except AssertionError as exc:
        seen = {key: await redis.xlen(key) for key in lengths}
        raise AssertionError(f"{exc}; saw {seen}\n{workers.logs()}") from None


async def log_ids(redis: Redis, event_type: str) -> list[str]:
    entries: Any = await redis.xrange(log_stream(event_type))
    return [json.loads(fields[b"event"])["event_id"] for _, fields in entries]


async def test_audit_finds_processed_and_rejected_events_on_both_paths(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    order = OrderEvent(event_id="audit-me", order_id="o-1", symbol="AAPL", side=OrderSide.BUY,
                       quantity=5, source="oms")
    workers.start()
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish(order)
    entry: Any = await redis_client.xadd(ingress_stream("market_data"), {
        "event": b'{"event_type":"market_data","symbol":"MSFT","price":10.0}'})
    derived_id = f"{ingress_stream('market_data')}/{entry.decode()}#0"
    await produce_raw(pipeline_settings, event_topic("market_data"), [BAD_PRICE])
    await redis_client.xadd(ingress_stream("fill"), {
        "event": b'{"event_type":"fill","event_id":"bad-fill","order_id":"o-1","symbol":"AAPL",'
                 b'"executed_quantity":0,"executed_price":1.0,"trade_id":"T-1"}'})
    await wait_until(redis_client, workers, "logged and rejected",
                     {log_stream("order"): 1, log_stream("market_data"): 1, DLQ_STREAM: 2})

    window = pipeline_settings.dedupe_window_s
    report = await audit(redis_client, "audit-me", window_s=window)
    assert report.status == "logged"
    (found,) = report.log
    logged: Any = await redis_client.xrange(log_stream("order"))
    (entry_id, fields), = logged
    assert (found.entry_id, found.found_by) == (entry_id.decode(), "dedupe index")
    coordinates = found.kafka
    assert coordinates is not None and coordinates.topic == event_topic("order")
    assert coordinates.partition == partition_for(b"AAPL", pipeline_settings.partitions)
    assert found.origin == fields[b"origin"].decode()
    assert report.dedupe[0].fingerprint == content_fingerprint(order)
    assert "Kafka silvertine.order" in report.ingress

    report = await audit(redis_client, derived_id, window_s=window)
    assert report.status == "logged"
    assert "Redis ingress stream events:market_data" in report.ingress

    report = await audit(redis_client, "neg-1", window_s=window)
    assert report.status == "rejected"
    assert "Price must be positive" in report.dead_letters[0].reason
    assert report.dead_letters[0].origin.startswith(event_topic("market_data") + "/")
    assert report.notes == []  # answered from the indexes, no scan

    report = await audit(redis_client, "bad-fill", window_s=window)
    assert report.status == "rejected"
    assert "Executed quantity must be positive" in report.dead_letters[0].reason
    assert report.dead_letters[0].origin.startswith(ingress_stream("fill") + "/")
    assert "Redis ingress stream events:fill" in report.ingress

    shown = run_ops(pipeline_settings, "audit", "audit-me")
    assert shown.returncode == 0, shown.stderr
    assert "event audit-me: logged" in shown.stdout
    assert f"log:order entry {entry_id.decode()}" in shown.stdout
    assert "kafka time:" in shown.stdout and "processed at:" in shown.stdout
    rejected = run_ops(pipeline_settings, "audit", "neg-1", "--json")
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["dead_letters"][0]["reason"].startswith("invalid:")
    missing = run_ops(pipeline_settings, "audit", "no-such-event")
    assert missing.returncode == 1
    assert "not found" in missing.stdout and "scanned" in missing.stdout


async def test_audit_beyond_the_dedupe_window_falls_back_to_a_bounded_scan(
    redis_client: Redis,
) -> None:
    from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord

    events = [MarketDataEvent(symbol="AAPL", price=1.0 + i, source="f", sequence=i)
              for i in range(50)]
    sink = CanonicalLogSink(redis_client, "market_data", window_s=60)
    await sink.write([LogRecord(e.event_id, content_fingerprint(e), encode_event(e),
                                f"silvertine.market_data/1/{i}#0") for i, e in enumerate(events)])
    for key in await redis_client.keys("ids:*"):
        await redis_client.delete(key)  # what the window's expiry does

    report = await audit(redis_client, events[7].event_id, window_s=60)
    assert report.status == "logged" and report.log[0].found_by == "scan"
    assert any("scanned the newest 50 entries" in note and "found it" in note
               for note in report.notes)

    report = await audit(redis_client, events[7].event_id, window_s=60, scan_limit=10)
    assert report.status == "not found"
    assert any("scan limit reached" in note for note in report.notes)


async def test_requeue_after_fixing_the_cause_logs_the_event_exactly_once(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    workers.start()
    # An order produced to the market-data topic, twice (a producer retry): two dead letters.
    await produce_raw(pipeline_settings, event_topic("market_data"),
                      [ORDER_ON_WRONG_TOPIC, ORDER_ON_WRONG_TOPIC], key=b"MSFT")
    await produce_raw(pipeline_settings, event_topic("market_data"), [BAD_PRICE])
    await wait_until(redis_client, workers, "three dead letters", {DLQ_STREAM: 3})
    indexed: Any = await redis_client.hget(DLQ_INDEX, "lost-order")
    assert indexed.count(b" ") == 1  # two dlq entry ids

    listed = run_ops(pipeline_settings, "dlq", "list", "--reason", "does not belong", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["event_id"] for r in rows] == ["lost-order", "lost-order"]
    assert all(r["event_type"] == "order" for r in rows)
    table = run_ops(pipeline_settings, "dlq", "list")
    assert "total 3 (invalid: 3)" in table.stdout

    # The cause (the wrong topic) is fixed by routing on the payload's own event_type.
    done = run_ops(pipeline_settings, "dlq", "requeue", "--reason", "does not belong", "--yes")
    assert done.returncode == 0, done.stderr
    assert "2 requeued, 0 kept, 0 missing" in done.stdout
    await wait_until(redis_client, workers, "the order logged", {log_stream("order"): 1})
    await async_wait_for(lambda: _ingress_empty(redis_client), timeout=30,
                         message="ingress drained")

    assert await log_ids(redis_client, "order") == ["lost-order"]
    remaining = await list_dead_letters(redis_client)
    assert [letter.event_id for letter in remaining] == ["neg-1"]
    assert await redis_client.hget(DLQ_INDEX, "lost-order") is None
    report = await audit(redis_client, "lost-order",
                         window_s=pipeline_settings.dedupe_window_s)
    assert report.status == "logged" and len(report.requeues) == 2


async def test_a_requeued_letter_that_fails_again_comes_back_with_its_new_reason(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    workers.start()
    await produce_raw(pipeline_settings, event_topic("market_data"), [BAD_PRICE])
    await redis_client.xadd(DLQ_STREAM, {"payload": b"\xffgarbage", "reason": "invalid: junk",
                                         "origin": "silvertine.order/0/9"})
    await wait_until(redis_client, workers, "dead letter", {DLQ_STREAM: 2})
    first = next(e for e in await list_dead_letters(redis_client) if e.event_id == "neg-1")

    result = await requeue(redis_client, everything=True)
    assert [r[0] for r in result.requeued] == [first.entry_id]
    assert len(result.kept) == 1 and "not JSON" in result.kept[0][1]

    async def back() -> DeadLetterEntry | None:
        letters = [e for e in await list_dead_letters(redis_client) if e.event_id == "neg-1"]
        return letters[0] if letters else None

    returned = await async_wait_for(back, timeout=30, message="the letter is back")
    assert returned is not None
    assert returned.entry_id != first.entry_id
    assert returned.origin.startswith(ingress_stream("market_data") + "/")
    assert "Price must be positive" in returned.reason
    assert returned.payload == BAD_PRICE
    report = await audit(redis_client, "neg-1", window_s=pipeline_settings.dedupe_window_s)
    assert [d.entry_id for d in report.dead_letters] == [returned.entry_id]
    assert report.requeues[0][0] == first.entry_id


async def test_purge_asks_first_and_keeps_the_index_in_step(
    pipeline_settings: Settings, redis_client: Redis
) -> None:
    from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink

    sink = DeadLetterSink(redis_client)
    await sink.write([DeadLetter(BAD_PRICE, "invalid: Price must be positive", "t/0/1"),
                      DeadLetter(b"{}", "id_conflict: x", "t/0/2")])
    assert await redis_client.hget(DLQ_INDEX, "neg-1") is not None
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()

    declined = run_ops(pipeline_settings, "dlq", "purge", "--before", later, stdin="n\n",
                       terminal=True)
    assert declined.returncode == 1 and "Delete 2 dead letter(s)" in declined.stdout
    assert await redis_client.xlen(DLQ_STREAM) == 2

    done = run_ops(pipeline_settings, "dlq", "purge", "--before", later, "--reason", "invalid",
                   "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 dead letter(s)" in done.stdout
    assert [e.code for e in await list_dead_letters(redis_client)] == ["id_conflict"]
    assert await redis_client.hget(DLQ_INDEX, "neg-1") is None
    earlier = datetime.now(UTC) - timedelta(days=1)
    assert await purge(redis_client, earlier) == 0


def test_requeue_gives_an_id_less_payload_a_stable_id_and_keeps_its_bytes() -> None:
    payload = b'  {"event_type":"market_data","symbol":"X","price": 1.50}'
    letter = DeadLetterEntry("5-0", payload, "invalid: x", "silvertine.market_data/2/77")
    again = DeadLetterEntry("9-0", payload, "invalid: x", "silvertine.market_data/2/77")

    body, event_id = requeue_payload(letter)

    assert event_id.startswith("requeued:silvertine.market_data/2/77:")
    assert requeue_payload(again) == (body, event_id)  # a copy of the letter: the same event
    assert body.endswith(b'"symbol":"X","price": 1.50}')
    assert decode_event(body).event_id == event_id
    empty = DeadLetterEntry("1-0", b"{ }", "r", "o")
    assert json.loads(requeue_payload(empty)[0]) == {"event_id": requeue_payload(empty)[1]}
    keeps = DeadLetterEntry("1-0", BAD_PRICE, "r", "o")
    assert requeue_payload(keeps) == (BAD_PRICE, "neg-1")


async def _ingress_empty(redis: Redis) -> bool:
    lengths: list[Any] = [await redis.xlen(ingress_stream(t)) for t in ("order", "market_data")]
    return not any(lengths)
