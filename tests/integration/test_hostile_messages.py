"""No message stops or bypasses the pipeline (guarantee 7), tried with a real worker.

Two corpora: a hand-written one (each case named), and one drawn from the
property tests' Hypothesis strategy, checked message by message.

A librdkafka producer sends hostile messages (too deep, too big, not UTF-8, not
JSON, duplicate keys, a giant array, an envelope mixing good and bad events), each
followed by a valid canary on the same partition. Every hostile message must end in
the DLQ, every valid event in the log, and the worker must neither die nor restart.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from redis.asyncio import Redis

from silvertine_streams.events import EventType, decode_message
from silvertine_streams.settings import Settings
from silvertine_streams.topics import event_topic, log_stream
from tests.helpers import async_wait_for, wait_for
from tests.logcheck import read_dlq, read_log
from tests.pipeline_support import WorkerPool, metrics_of
from tests.property.test_hostile_payloads import hostile_messages

pytestmark = pytest.mark.integration

TOPIC = event_topic("market_data")


def tick(symbol: str = "AAPL", **extra: Any) -> dict[str, Any]:
    return {"event_type": "market_data", "event_id": f"t-{uuid.uuid4().hex[:12]}",
            "symbol": symbol, "price": 10.0, "source": "hostile-test", **extra}


def hostile_corpus() -> list[tuple[str, bytes]]:
    deep = (b'{"event_type":"market_data","symbol":"AAPL","price":1,"metadata":{"x":'
            + b"[" * 20_000 + b"1" + b"]" * 20_000 + b"}}")
    return [
        ("deep", deep),
        ("2 MB", json.dumps(tick(metadata={"blob": "x" * 2_000_000})).encode()),
        ("100 KB", json.dumps(tick(metadata={"blob": "x" * 100_000})).encode()),
        ("not utf-8", b'{"event_type":"market_data","symbol":"\xff\xfe","price":1}'),
        ("not json", b"\x00\x01 this is not json"),
        ("empty", b""),
        ("null", b"null"),
        ("duplicate keys", b'{"event_type":"market_data","symbol":"A","price":1,"price":-1}'),
        ("giant array", json.dumps(list(range(50_000))).encode()),
        ("wrong type", json.dumps({"event_type": "order", "order_id": "o", "symbol": "AAPL",
                                   "side": "buy", "quantity": 1}).encode()),
    ]


async def test_hostile_messages_end_in_the_dlq_and_the_stream_goes_on(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    from confluent_kafka import Producer

    worker = workers.start()
    producer = Producer({"bootstrap.servers": ",".join(pipeline_settings.kafka_bootstrap),
                         "message.max.bytes": 5_000_000})
    canaries: list[str] = []
    corpus = hostile_corpus()
    good_a, good_b = tick(), tick()
    mixed = json.dumps([good_a, {"event_type": "market_data", "symbol": ""}, good_b]).encode()
    for _, value in [*corpus, ("mixed envelope", mixed)]:
        producer.produce(TOPIC, value=value, key=b"AAPL")
        canary = tick()
        canaries.append(canary["event_id"])
        producer.produce(TOPIC, value=json.dumps(canary).encode(), key=b"AAPL")
    assert producer.flush(60) == 0, "confluent-kafka did not deliver"
    expected_logged = {*canaries, good_a["event_id"], good_b["event_id"]}

    async def all_logged() -> bool:
        logged = {event["event_id"] for event in await read_log(redis_client, "market_data")}
        return expected_logged <= logged

    try:
        await async_wait_for(all_logged, timeout=120, interval=0.2,
                             message="every canary and good event logged")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from None

    letters = await read_dlq(redis_client)
    # One dead letter per hostile message (distinct Kafka offsets), plus the mixed
    # envelope's bad event; no valid event among them.
    offsets = {letter["origin"].split("#")[0] for letter in letters}
    assert len(offsets) == len(corpus) + 1, sorted(letter["reason"][:60] for letter in letters)
    reasons = " ".join(letter["reason"] for letter in letters)
    for code in ("too_deep:", "too_large:", "invalid:"):
        assert code in reasons
    assert all(len(letter["payload"]) <= 1_100_000 for letter in letters)
    logged = [event["event_id"] for event in await read_log(redis_client, "market_data")]
    assert sorted(logged) == sorted(expected_logged)  # nothing else, nothing twice

    assert worker.alive()
    wait_for(lambda: metrics_of(worker).get(("silvertine_worker_restarts_total", ())) == 0.0,
             timeout=10, message="the worker's metrics (no restart)")
    assert "restarting" not in worker.log_path.read_text()


def generated_corpus(count: int) -> list[bytes]:
    """``count`` messages from the property tests' hostile strategy (fixed seed: repeatable)."""
    corpus: list[bytes] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(hostile_messages())
    def collect(message: bytes) -> None:
        corpus.append(message)

    collect()
    return corpus


def offset_of(origin: str) -> str:
    """``topic/partition/offset`` of an origin (``…#index`` for an envelope's events)."""
    return origin.split("#")[0]


async def test_a_generated_hostile_corpus_ends_whole_in_log_and_dlq_and_the_worker_lives(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    from confluent_kafka import Producer

    worker = workers.start()
    corpus = generated_corpus(60)
    producer = Producer({"bootstrap.servers": ",".join(pipeline_settings.kafka_bootstrap),
                         "message.max.bytes": 5_000_000})
    origins: dict[str, bytes] = {}

    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        origins[f"{message.topic()}/{message.partition()}/{message.offset()}"] = message.value()

    for value in corpus:
        producer.produce(TOPIC, value=value, key=b"AAPL", on_delivery=delivered)
    assert producer.flush(60) == 0, "confluent-kafka did not deliver"
    assert len(origins) == len(corpus)
    # What each message must become, by the same decoder the worker runs.
    expected = {origin: decode_message(value, EventType.MARKET_DATA)
                for origin, value in origins.items()}
    want_logged = sum(len(d.events) for d in expected.values())
    want_dead = sum(len(d.rejects) for d in expected.values())

    async def logged_by_offset() -> Counter[str]:
        entries = await redis_client.xrange(log_stream("market_data"))
        return Counter(offset_of(fields[b"origin"].decode()) for _, fields in entries)

    async def dead_by_offset() -> Counter[str]:
        return Counter(offset_of(letter["origin"]) for letter in await read_dlq(redis_client))

    async def settled() -> bool:
        return (sum((await logged_by_offset()).values()) >= want_logged
                and sum((await dead_by_offset()).values()) >= want_dead)

    try:
        await async_wait_for(settled, timeout=120, interval=0.2,
                             message=f"{want_logged} events logged, {want_dead} dead letters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from None
    logged, dead = await logged_by_offset(), await dead_by_offset()
    # Log ⊎ DLQ = produced, message by message: every event once, every reject once.
    for origin, decoded in expected.items():
        assert logged[origin] == len(decoded.events), (origin, origins[origin][:80])
        assert dead[origin] == len(decoded.rejects), (origin, origins[origin][:80])
    assert set(logged) | set(dead) <= set(origins)

    assert worker.alive()
    wait_for(lambda: metrics_of(worker).get(("silvertine_worker_restarts_total", ())) == 0.0,
             timeout=10, message="the worker's metrics (no restart)")
