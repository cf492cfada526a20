"""The canonical-log and dead-letter sinks against a real redis-server.

Most tests use the session's Redis (``redis_client``, flushed per test). The
outage tests start their own redis-server (AOF in ``tmp_path``, a free port)
so they can kill and restart it without disturbing other tests.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from silvertine_streams.domain.business_keys import business_key
from silvertine_streams.embedded.processes import pick_free_port
from silvertine_streams.embedded.stack import redis_server_binary
from silvertine_streams.events import FillEvent, encode_event
from silvertine_streams.settings import Settings
from silvertine_streams.sinks import (
    CanonicalLogSink,
    DeadLetter,
    DeadLetterSink,
    LogRecord,
    SinkClosed,
    WriteStatus,
)
from silvertine_streams.sinks import canonical_log as canonical_log_module
from silvertine_streams.sinks.canonical_log import split_index_value
from silvertine_streams.sinks.keys import DLQ_STREAM, dedupe_bucket, log_stream
from tests.helpers import async_wait_for

pytestmark = pytest.mark.integration

W, D, C = WriteStatus.WRITTEN, WriteStatus.DUPLICATE, WriteStatus.CONFLICT
LOG = log_stream("order")


def record(n: int, fingerprint: str | None = None, price: str = "101.5") -> LogRecord:
    """An order event ``o-<n>`` whose fingerprint follows its content unless given."""
    event = {"event_type": "order", "event_id": f"o-{n}", "symbol": "AAPL", "price": price}
    body = json.dumps(event).encode()
    return LogRecord(
        event_id=f"o-{n}",
        fingerprint=fingerprint or f"fp-{n}-{price}",
        event_json=body,
        origin=f"silvertine.order/0/{n}",
    )


async def logged(client: Redis, stream: str = LOG) -> list[dict[bytes, bytes]]:
    """Every entry's fields, in log order."""
    entries = await client.xrange(stream)
    assert entries is not None
    return [fields for _id, fields in entries]  # type: ignore[misc]  # bytes: no decoding


class FakeClock:
    """Wall-clock seconds that a test sets by hand."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


# --- the canonical log on the session's Redis --------------------------------


async def test_batch_lands_once_with_event_and_origin(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "order")
    batch = [record(n) for n in range(5)]

    assert await sink.write(batch) == [W] * 5

    assert await logged(redis_client) == [
        {b"event": r.event_json, b"origin": r.origin.encode()} for r in batch
    ]
    assert (sink.written, sink.duplicates, sink.conflicts, sink.retries) == (5, 0, 0, 0)


async def test_same_batch_again_is_all_duplicate_even_from_a_fresh_worker(
    redis_client: Redis,
) -> None:
    batch = [record(n) for n in range(5)]
    await CanonicalLogSink(redis_client, "order").write(batch)

    # A fresh sink stands for a worker restarted after kill -9 with no state:
    # the redelivered batch must not write anything.
    again = CanonicalLogSink(redis_client, "order")
    assert await again.write(batch) == [D] * 5
    assert await again.write(batch[1:3]) == [D] * 2

    assert await redis_client.xlen(LOG) == 5
    assert again.duplicates == 7


async def test_same_id_other_fingerprint_is_a_conflict_and_the_first_write_stays(
    redis_client: Redis,
) -> None:
    sink = CanonicalLogSink(redis_client, "order", window_s=60, clock=FakeClock(6_000.0))
    first = record(1, price="101.5")
    await sink.write([first])

    impostor = record(1, price="999.0")
    assert await sink.write([impostor, record(2)]) == [C, W]

    entries = await logged(redis_client)
    assert [e[b"event"] for e in entries] == [first.event_json, record(2).event_json]
    head: Any = await redis_client.xrange(LOG, count=1)
    first_entry_id: bytes = head[0][0]
    assert await redis_client.hget(dedupe_bucket("order", 100), "o-1") == (
        first.fingerprint.encode() + b"|" + first_entry_id
    )
    assert sink.conflicts == 1


async def test_the_index_records_each_ids_log_entry_for_audit(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "order", window_s=60, clock=FakeClock(6_000.0))
    batch = [record(n) for n in range(3)]
    await sink.write(batch + [batch[0]])

    entries: Any = await redis_client.xrange(LOG)
    for rec, (entry_id, fields) in zip(batch, entries, strict=True):
        value = await redis_client.hget(dedupe_bucket("order", 100), rec.event_id)
        assert value is not None
        assert split_index_value(value) == (rec.fingerprint, entry_id.decode())
        assert fields[b"event"] == rec.event_json


async def test_index_values_without_entry_id_still_dedupe(redis_client: Redis) -> None:
    # Buckets written before entry ids were recorded hold the fingerprint alone.
    sink = CanonicalLogSink(redis_client, "order", window_s=60, clock=FakeClock(6_000.0))
    old = record(1)
    await redis_client.hset(dedupe_bucket("order", 99), old.event_id, old.fingerprint)

    assert await sink.write([old, record(1, price="5.0"), record(2)]) == [D, C, W]
    assert split_index_value(old.fingerprint) == (old.fingerprint, None)


async def test_duplicates_inside_one_batch(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "order")
    a, b = record(1), record(2)
    a_changed = record(1, price="7.0")

    assert await sink.write([a, a, b, a_changed, b]) == [W, D, W, C, D]
    assert [e[b"event"] for e in await logged(redis_client)] == [a.event_json, b.event_json]


async def test_dedupe_window_spans_the_previous_bucket_but_not_two_back(
    redis_client: Redis,
) -> None:
    clock = FakeClock(now_s=1_000.0)  # bucket 10 with a 100 s window
    sink = CanonicalLogSink(redis_client, "order", window_s=100, clock=clock)
    assert await sink.write([record(1)]) == [W]
    ttl_ms = await redis_client.pttl(dedupe_bucket("order", 10))
    assert 190_000 < ttl_ms <= 200_000  # 2 x window: lives while it is consulted

    clock.now_s = 1_199.0  # bucket 11: the previous bucket still knows o-1
    assert await sink.write([record(1), record(1, price="2.0")]) == [D, C]

    clock.now_s = 1_200.0  # bucket 12: bucket 10 is out of the window
    assert await sink.write([record(1)]) == [W]
    assert await redis_client.xlen(LOG) == 2


async def test_noscript_after_script_flush_is_handled(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "order")
    await sink.write([record(1)])
    await redis_client.script_flush()  # what a Redis restart does to the cache

    assert await sink.write([record(1), record(2)]) == [D, W]
    assert sink.retries == 0  # reloaded inside the attempt, not by backoff
    _source, sha = canonical_log_module._script()
    assert await redis_client.script_exists(sha) == [True]  # later calls use EVALSHA again


async def test_large_batches_are_chunked_correctly(redis_client: Redis) -> None:
    # 2,500 records cross the script's 1,000-id HMGET/HSET chunks, and a
    # client-side limit of 1,000 per call makes a repeat cross calls too.
    sink = CanonicalLogSink(redis_client, "order", max_per_call=1_000)
    batch = [record(n) for n in range(2_500)]
    batch[1_700] = record(3)  # a repeat of an id written in the first call

    statuses = await sink.write(batch)

    assert statuses.count(W) == 2_499
    assert statuses[1_700] is D
    assert await redis_client.xlen(LOG) == 2_499
    assert await sink.write(batch[2_000:]) == [D] * 500


async def test_a_bounded_sink_splits_a_batch_into_script_calls_of_its_size(
    redis_client: Redis,
) -> None:
    sink = CanonicalLogSink(redis_client, "order", max_per_call=400)
    before = await redis_client.info("commandstats")

    statuses = await sink.write([record(n) for n in range(1_000)])

    after = await redis_client.info("commandstats")
    calls = sum(after.get(k, {}).get("calls", 0) - before.get(k, {}).get("calls", 0)
                for k in ("cmdstat_evalsha", "cmdstat_eval"))
    assert calls == 3  # 400 + 400 + 200
    assert statuses == [W] * 1_000 and await redis_client.xlen(LOG) == 1_000
    with pytest.raises(ValueError, match="max_per_call"):
        CanonicalLogSink(redis_client, "order", max_per_call=0)


async def test_empty_batch_writes_nothing(redis_client: Redis) -> None:
    assert await CanonicalLogSink(redis_client, "order").write([]) == []
    assert await redis_client.exists(LOG) == 0


async def test_works_with_a_client_that_decodes_replies(stack_settings: Settings) -> None:
    assert stack_settings.redis_url is not None
    client = Redis.from_url(stack_settings.redis_url, decode_responses=True)
    try:
        await client.flushdb()
        sink = CanonicalLogSink(client, "order")
        assert await sink.write([record(1), record(1)]) == [W, D]
    finally:
        await client.aclose()


async def test_wrong_type_raises_at_once_without_writing(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "order", window_s=60, clock=FakeClock(6_000.0))
    await redis_client.set(dedupe_bucket("order", 99), "not a hash")  # the previous bucket

    with pytest.raises(redis_errors.ResponseError, match="WRONGTYPE"):
        await asyncio.wait_for(sink.write([record(1)]), timeout=10)
    assert sink.retries == 0
    assert await redis_client.exists(LOG) == 0


# --- dead letters ------------------------------------------------------------


async def test_dead_letters_keep_payload_reason_and_origin_exactly(redis_client: Redis) -> None:
    sink = DeadLetterSink(redis_client)
    letters = [
        DeadLetter(b'{"event_type": "order", "price": -1}', "price must be positive", "o/0/7"),
        DeadLetter(b"\xff\x00not json", "not UTF-8 JSON", "silvertine.fill/3/12"),
    ]

    await sink.write(letters)
    await sink.write([])

    assert await logged(redis_client, DLQ_STREAM) == [
        {b"payload": p, b"reason": r.encode(), b"origin": o.encode()} for p, r, o in letters
    ]
    assert sink.written == 2


# --- outages: a redis-server of the test's own --------------------------------


class OwnRedis:
    """A redis-server on a free port with its AOF in a directory; stopped by PID."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = pick_free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self, **kwargs: object) -> Redis:
        # No retries inside redis-py: the sink's own loop is what we test.
        return Redis(
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
            **kwargs,  # type: ignore[arg-type]  # test-only passthrough
        )

    async def wait_ready(self, client: Redis) -> None:
        await async_wait_for(
            client.ping,
            timeout=15,
            message=f"own redis-server on port {self.port} answering",
            ignore=(redis_errors.ConnectionError, redis_errors.TimeoutError),
        )


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[OwnRedis, Redis]]:
    server = OwnRedis(tmp_path)
    server.start()
    client = server.client()
    try:
        await server.wait_ready(client)
        yield server, client
    finally:
        await client.aclose()
        server.kill()


async def test_outage_blocks_the_write_until_redis_is_back_then_lands_once(
    own_redis: tuple[OwnRedis, Redis],
) -> None:
    server, client = own_redis
    sink = CanonicalLogSink(client, "order", retry_max_s=0.1)
    before = [record(n) for n in range(3)]
    assert await sink.write(before) == [W] * 3

    server.kill()  # kill -9: appendfsync always must keep what was acknowledged
    during = before + [record(n) for n in range(3, 6)]
    write = asyncio.create_task(sink.write(during))

    async def retrying_not_raising() -> bool:
        if write.done():
            raise AssertionError(f"write ended during the outage: {write!r}")
        return sink.retries >= 3

    await async_wait_for(retrying_not_raising, timeout=15, message="write retries in the outage")
    assert isinstance(sink.last_error, redis_errors.ConnectionError | ConnectionError)

    server.start()  # same port, same AOF; the script cache starts empty
    statuses = await asyncio.wait_for(write, timeout=30)

    assert statuses == [D] * 3 + [W] * 3
    assert [e[b"event"] for e in await logged(client)] == [r.event_json for r in during]


async def test_close_interrupts_a_write_retrying_an_outage(
    own_redis: tuple[OwnRedis, Redis],
) -> None:
    server, client = own_redis
    server.kill()
    sink = CanonicalLogSink(client, "order", retry_max_s=0.05)
    dlq = DeadLetterSink(client, retry_max_s=0.05)
    write = asyncio.create_task(sink.write([record(1)]))
    dead = asyncio.create_task(dlq.write([DeadLetter(b"x", "bad", "o/0/1")]))

    async def both_retrying() -> bool:
        return sink.retries >= 2 and dlq.retries >= 2

    await async_wait_for(both_retrying, timeout=15, message="both sinks retrying")

    sink.close()
    dlq.close()

    with pytest.raises(SinkClosed) as closed:
        await asyncio.wait_for(write, timeout=5)
    assert closed.value.attempts >= 2
    with pytest.raises(SinkClosed):
        await asyncio.wait_for(dead, timeout=5)
    with pytest.raises(SinkClosed):
        await sink.write([record(2)])  # a closed sink takes no new writes


async def test_close_interrupts_an_attempt_hanging_on_a_silent_server() -> None:
    # A server that accepts and never answers: the attempt hangs on the socket
    # (a 60 s timeout here); close() must not wait for it.
    asked = asyncio.Event()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        asked.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Redis(port=port, socket_timeout=60, socket_connect_timeout=60)
    try:
        sink = CanonicalLogSink(client, "order")
        write = asyncio.create_task(sink.write([record(1)]))
        await asyncio.wait_for(asked.wait(), timeout=10)  # the attempt is in flight
        assert not write.done()

        sink.close()
        with pytest.raises(SinkClosed):
            await asyncio.wait_for(write, timeout=5)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


# --- business keys: a fill is one execution, whatever event id carries it ----------


def fill_record(event_id: str, trade_id: str, exchange: str = "XNAS") -> LogRecord:
    """A fill record with its business key, as the pipeline builds it."""
    event = FillEvent(event_id=event_id, order_id="o-1", symbol="AAPL", executed_quantity=1.0,
                      executed_price=10.0, exchange=exchange, trade_id=trade_id)
    return LogRecord(event_id, f"fp-{event_id}", encode_event(event),
                     f"silvertine.fill/0/{event_id}", business_key(event))


async def test_a_rebuilt_fill_with_a_new_id_is_a_business_duplicate(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "fill")
    assert await sink.write([fill_record("f-1", "T-1")]) == [W]
    # The producer retried with a new uuid4: same venue, same trade id.
    rebuilt = [fill_record("f-2", "T-1"), fill_record("f-3", "T-2"),
               fill_record("f-4", "T-1", exchange="XLON"), fill_record("f-5", "T-2")]
    assert await CanonicalLogSink(redis_client, "fill").write(rebuilt) == [
        WriteStatus.BUSINESS_DUPLICATE, W, W, WriteStatus.BUSINESS_DUPLICATE]
    ids = [json.loads(fields[b"event"])["event_id"]
           for fields in await logged(redis_client, log_stream("fill"))]
    assert ids == ["f-1", "f-3", "f-4"]  # another venue's T-1 is another execution
    # The first write's redelivery is still a plain duplicate, not a business one.
    assert await sink.write([fill_record("f-1", "T-1")]) == [D]


async def test_fills_without_a_trade_id_have_no_business_key(redis_client: Redis) -> None:
    sink = CanonicalLogSink(redis_client, "fill")
    assert business_key(FillEvent(order_id="o", symbol="A", executed_quantity=1.0,
                                  executed_price=1.0)) == ""
    assert await sink.write([fill_record("f-1", ""), fill_record("f-2", "")]) == [W, W]
