"""Retention on a real redis-server: trims held by cursors, DLQ bound, gauges, WAIT."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from silvertine_streams.embedded.servers import redis_server_binary
from silvertine_streams.errors import ReplicationTimeout
from silvertine_streams.observability.metrics import (
    DEDUPE_INDEX_BYTES,
    DEDUPE_INDEX_ENTRIES,
    DLQ_TRIMMED,
    LOG_TRIMMED,
)
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord, WriteStatus
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.sinks.replication import ReplicaWait
from silvertine_streams.sinks.retention import Retention
from silvertine_streams.sinks.retry import SinkClosed
from silvertine_streams.topics import (
    DLQ_INDEX,
    DLQ_STREAM,
    handler_cursor,
    handler_progress,
    log_followers,
    log_stream,
)

LOG = log_stream("market_data")


def _retention(redis: Redis, **changes: object) -> Retention:
    options: dict[str, object] = {
        "max_age_s": {}, "max_entries": {}, "event_types": ("market_data",),
        "dedupe_window_s": 3600.0}
    options.update(changes)
    return Retention(redis, "test", **options)  # type: ignore[arg-type]


async def _fill(redis: Redis, count: int) -> list[str]:
    pipe = redis.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(LOG, {"event": f"{i}"})
    return [e.decode() for e in await pipe.execute()]


async def _follow(redis: Redis, app: str, cursor: str | None, finished: int) -> None:
    await redis.sadd(log_followers("market_data"), app)
    if cursor is not None:
        await redis.hset(handler_cursor(app), "market_data", cursor)
        await redis.hset(handler_progress(app), "market_data", finished)


async def test_a_length_bound_trims_the_oldest_entries(redis_client: Redis) -> None:
    ids = await _fill(redis_client, 100)
    before = LOG_TRIMMED.labels("market_data")._value.get()
    result = await _retention(redis_client, max_entries={"market_data": 30}).trim("market_data")
    assert result.removed == 70 and result.held_by is None
    assert await redis_client.xlen(LOG) == 30
    first = (await redis_client.xrange(LOG, count=1))[0][0].decode()
    assert first == ids[70]
    assert LOG_TRIMMED.labels("market_data")._value.get() - before == 70


async def test_a_lagging_handler_group_holds_the_trim_at_its_cursor(redis_client: Redis) -> None:
    ids = await _fill(redis_client, 100)
    await _follow(redis_client, "fast", ids[90], 91)
    await _follow(redis_client, "slow", ids[19], 20)  # finished the first 20 entries
    retention = _retention(redis_client, max_entries={"market_data": 10})
    result = await retention.trim("market_data")
    assert result.held_by == "handler group slow"
    assert result.removed == 20
    first = (await redis_client.xrange(LOG, count=1))[0][0].decode()
    assert first == ids[20]  # the slow group's next entry is still there
    # The finished counts moved down with the trim: lag (XLEN - finished) stays right.
    assert int(await redis_client.hget(handler_progress("slow"), "market_data")) == 0
    assert int(await redis_client.hget(handler_progress("fast"), "market_data")) == 71
    # The slow group catches up: the next round trims to the bound.
    await redis_client.hset(handler_cursor("slow"), "market_data", ids[95])
    result = await retention.trim("market_data")
    assert result.held_by is None and await redis_client.xlen(LOG) == 10


async def test_a_group_that_has_not_started_holds_the_whole_log(redis_client: Redis) -> None:
    await _fill(redis_client, 50)
    await _follow(redis_client, "new", None, 0)
    result = await _retention(redis_client, max_age_s={"market_data": 0.001}).trim("market_data")
    assert result.removed == 0 and result.held_by == "handler group new"
    assert await redis_client.xlen(LOG) == 50


async def test_an_age_bound_trims_entries_older_than_it(redis_client: Redis) -> None:
    seconds, micros = await redis_client.time()
    now_ms = seconds * 1000 + micros // 1000
    old = [f"{now_ms - 7_200_000 + i}-0" for i in range(5)]  # two hours ago
    for entry_id in old:
        await redis_client.xadd(LOG, {"event": "old"}, id=entry_id)
    recent = await _fill(redis_client, 5)
    result = await _retention(redis_client, max_age_s={"market_data": 3600}).trim("market_data")
    assert result.removed == 5
    assert [e[0].decode() for e in await redis_client.xrange(LOG)] == recent


async def test_a_consumer_group_on_the_log_holds_the_trim(redis_client: Redis) -> None:
    ids = await _fill(redis_client, 40)
    await redis_client.xgroup_create(LOG, "reader", id="0")
    await redis_client.xreadgroup("reader", "c1", {LOG: ">"}, count=15)  # 15 pending
    result = await _retention(redis_client, max_entries={"market_data": 5}).trim("market_data")
    assert result.held_by == "consumer group reader" and result.removed == 0
    await redis_client.xack(LOG, "reader", *ids[:15])
    result = await _retention(redis_client, max_entries={"market_data": 5}).trim("market_data")
    assert result.removed == 15
    assert (await redis_client.xrange(LOG, count=1))[0][0].decode() == ids[15]


async def test_the_trim_refuses_a_cursor_that_moved_back(redis_client: Redis) -> None:
    # The fence inside the script: a MINID planned before a cursor moved back is refused.
    ids = await _fill(redis_client, 20)
    await _follow(redis_client, "a", ids[5], 6)
    retention = _retention(redis_client)
    keys = [LOG, log_followers("market_data"), handler_cursor("a"), handler_progress("a")]
    refused = await retention._trim(keys=keys, args=["market_data", ids[10], 1, "a"])
    assert refused == -1 and await redis_client.xlen(LOG) == 20
    allowed = await retention._trim(keys=keys, args=["market_data", ids[6], 1, "a"])
    assert allowed == 6 and await redis_client.xlen(LOG) == 14


async def test_the_dlq_is_bounded_and_counts_what_the_bound_removed(redis_client: Redis) -> None:
    sink = DeadLetterSink(redis_client, max_len=100)
    before = DLQ_TRIMMED._value.get()
    for batch in range(10):
        await sink.write([DeadLetter(b'{"event_id":"e-%d-%d"}' % (batch, i), "invalid: x", "o")
                          for i in range(50)])
    length = await redis_client.xlen(DLQ_STREAM)
    # Approximate MAXLEN: whole nodes go, so the stream keeps at least the bound.
    assert 100 <= length < 500
    assert sink.trimmed == 500 - length
    assert DLQ_TRIMMED._value.get() - before == 500 - length
    # The index keeps references to removed entries until the retention sweep.
    assert await redis_client.hlen(DLQ_INDEX) == 500
    await _retention(redis_client).sweep_dlq_index()
    assert await redis_client.hlen(DLQ_INDEX) == length
    kept = {f.decode() for f in await redis_client.hkeys(DLQ_INDEX)}
    assert "e-9-49" in kept and "e-0-0" not in kept


async def test_dedupe_index_gauges(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "market_data", window_s=3600, clock=lambda: 7200.5)
    await sink.write([LogRecord(f"id-{i}", "f", b'{"x":1}', "o") for i in range(250)])
    await _retention(redis_client, clock=lambda: 7200.5).sample()
    assert DEDUPE_INDEX_ENTRIES.labels("market_data")._value.get() == 250
    # Small hashes are listpacks (~29 B a field here); each field holds at least its id.
    assert DEDUPE_INDEX_BYTES.labels("market_data")._value.get() > 250 * len("id-100|f")


# --- WAIT for replicas -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


async def _poll(check: object, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await check():  # type: ignore[operator]
                return
        except OSError:
            pass
        except Exception as exc:  # a server still starting answers with an error
            if "connect" not in str(exc).lower() and "loading" not in str(exc).lower():
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[int]:
    proc, port = _start_redis(tmp_path / "primary")
    try:
        yield port
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
async def primary_client(primary: int) -> AsyncIterator[Redis]:
    client = Redis(port=primary, socket_timeout=10)
    await _poll(client.ping, "the primary answers")
    try:
        yield client
    finally:
        await client.aclose()


def _records(n: int) -> list[LogRecord]:
    return [LogRecord(f"id-{i}", "f", b'{"x":1}', "o") for i in range(n)]


async def test_wait_with_a_replica_acknowledges_the_write(
        tmp_path: Path, primary: int, primary_client: Redis) -> None:
    replica, _ = _start_redis(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary))
    try:
        async def synced() -> bool:
            info = await primary_client.info("replication")
            return int(info.get("connected_slaves", 0)) == 1 and \
                str(info.get("slave0", {}).get("state")) == "online"
        await _poll(synced, "the replica is online")
        sink = CanonicalLogSink(primary_client, "order", replica_wait=ReplicaWait(1, 2000))
        statuses = await sink.write(_records(20))
        assert statuses == [WriteStatus.WRITTEN] * 20
        assert sink.retries == 0
    finally:
        replica.kill()
        replica.wait(10)


async def test_wait_without_replicas_never_acknowledges(primary_client: Redis) -> None:
    sink = CanonicalLogSink(primary_client, "order", retry_max_s=0.05,
                            replica_wait=ReplicaWait(1, 50))
    dlq = DeadLetterSink(primary_client, retry_max_s=0.05, replica_wait=ReplicaWait(1, 50))
    write = asyncio.ensure_future(sink.write(_records(5)))
    letter = asyncio.ensure_future(dlq.write([DeadLetter(b"x", "invalid: x", "o")]))

    async def retried() -> bool:
        return sink.retries >= 3 and dlq.retries >= 3
    await _poll(retried, "both sinks retry the unreplicated write")
    assert not write.done() and not letter.done()  # the caller cannot ack the batch
    assert isinstance(sink.last_error, ReplicationTimeout)
    # The events are on the primary (written once: retries only wait again).
    assert await primary_client.xlen(log_stream("order")) == 5
    assert await primary_client.xlen(DLQ_STREAM) == 1
    sink.close()
    dlq.close()
    with pytest.raises(SinkClosed):
        await write
    with pytest.raises(SinkClosed):
        await letter
