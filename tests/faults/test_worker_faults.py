"""``kill -9`` of real ``silvertine worker`` processes mid-stream (DESIGN §3, guarantees 1 and 2).

Every test here runs real worker processes against a Tansu broker of its own and
the session's redis-server, SIGKILLs a worker while events are flowing, and then
reads the canonical log and the DLQ as any client would:

* every valid event produced is in ``log:market_data`` exactly once (nothing
  lost, nothing twice), and each symbol's sequences strictly increase;
* every invalid event is in ``dlq`` and nothing else is there.

Producers are paced (a rate, not a synchronisation), so kills land while the
stream is still moving; every wait is a poll with a generous deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from silvertine_streams.events import (
    Event,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    encode_event,
)
from silvertine_streams.kafka.publisher import Publisher, partition_for
from silvertine_streams.settings import Settings
from silvertine_streams.topics import (
    INGRESS_GROUP,
    event_topic,
    ingress_lease,
    ingress_stream,
    log_stream,
)
from tests.helpers import async_wait_for
from tests.logcheck import assert_log_invariants, read_dlq, read_log
from tests.pipeline_support import WorkerPool, metrics_of
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

EVENT_TYPE = "market_data"
PARTITIONS = 4  # pipeline_settings declares the topics with 4 partitions
# Worker start-up (Faust boot + group join on Tansu) takes seconds on 2 cores,
# and a takeover after kill -9 waits out the session timeout: deadlines are generous.
PROGRESS_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 75.0


def balanced_symbols(count: int, partitions: int = PARTITIONS) -> tuple[str, ...]:
    """Return ``count`` symbols spread evenly over the partitions (murmur2 of the key).

    Plain names like ``SYM00..SYM19`` land 11 of 20 on one partition; an even
    spread makes every partition (and so every worker of a group) carry load.
    """
    per_partition = count // partitions
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    candidate = 0
    while any(len(names) < per_partition for names in chosen.values()):
        name = f"SYM{candidate:03d}"
        slot = chosen[partition_for(name.encode(), partitions)]
        if len(slot) < per_partition:
            slot.append(name)
        candidate += 1
    return tuple(name for p in range(partitions) for name in chosen[p])


SYMBOLS = balanced_symbols(20)

def start_worker(pool: WorkerPool) -> WorkerProcess:
    """Start one more worker of the test's group, with shedding off."""
    # Market data may be conflated under overload by design (DESIGN §3.4, counted,
    # never silent); these tests are about kills, so every event must reach the log.
    return pool.start(SILVERTINE_OVERFLOW_POLICIES="market_data=block")


@dataclass
class TickSource:
    """Sequenced market data, one (source, symbol) stream per symbol, in rounds.

    Every round carries the next ``per_symbol`` sequences of every symbol,
    interleaved across symbols as a feed would send them.
    """

    symbols: Sequence[str]
    source: str
    per_symbol: int
    next_sequence: dict[str, int] = field(default_factory=dict)
    produced: list[Event] = field(default_factory=list)

    def next_round(self) -> list[Event]:
        """Build (and record) the next round of events."""
        batch: list[Event] = []
        for _ in range(self.per_symbol):
            for symbol in self.symbols:
                sequence = self.next_sequence.get(symbol, 1)
                self.next_sequence[symbol] = sequence + 1
                batch.append(MarketDataEvent(symbol=symbol, price=100.0 + sequence % 50,
                                             volume=1.0, source=self.source,
                                             sequence=sequence))
        self.produced.extend(batch)
        return batch


async def produce_paced(
    send_round: Callable[[int], Awaitable[None]],
    *,
    interval_s: float,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Call ``send_round(i)`` every ``interval_s`` until ``rounds`` are sent or ``stop`` is set.

    The pause is the producer's *rate* (so a kill lands mid-stream), not a way
    to wait for the engine: nothing here assumes the worker kept up.

    Returns:
        The number of rounds sent.
    """
    loop = asyncio.get_running_loop()
    sent = 0
    next_at = loop.time()
    while (rounds is None or sent < rounds) and not (stop is not None and stop.is_set()):
        await send_round(sent)
        sent += 1
        next_at += interval_s
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return sent


@dataclass
class InvalidFeed:
    """Invalid payloads of several kinds, each identifiable in the DLQ by a unique key.

    The key is the payload's ``event_id`` when it is JSON, else the payload itself.
    Envelopes mix a bad event with a valid one of the ``MIXED`` stream, so the
    engine must split the envelope, log the good one and dead-letter the bad one.
    """

    produced_keys: set[str] = field(default_factory=set)
    valid: list[Event] = field(default_factory=list)
    counter: int = 0

    def _bad(self, **fields: object) -> bytes:
        """Encode an invalid market-data event with a fresh id, and remember the id."""
        self.counter += 1
        event_id = f"bad-{self.counter}"
        self.produced_keys.add(event_id)
        return json.dumps({"event_type": EVENT_TYPE, "event_id": event_id,
                           "source": "feed-bad", **fields}).encode()

    def _not_json(self) -> bytes:
        self.counter += 1
        text = f"not json #{self.counter}"
        self.produced_keys.add(text)
        return text.encode()

    def kafka_messages(self) -> list[tuple[bytes, bytes]]:
        """Return ``(key, value)`` messages for the Kafka topic, covering every reject kind."""
        self.counter += 1
        wrong_type = OrderEvent(event_id=f"bad-{self.counter}", order_id="o-1", symbol="AAPL",
                                side=OrderSide.BUY, quantity=1.0, source="feed-bad")
        self.produced_keys.add(wrong_type.event_id)
        good = MarketDataEvent(symbol="MIXED", price=5.0, source="feed-mixed",
                               sequence=len(self.valid) + 1)
        self.valid.append(good)
        envelope = b"[" + encode_event(good) + b"," + self._bad(symbol="", price=1.0) + b"]"
        return [
            (b"AAPL", self._bad(symbol="AAPL", price=-1.0)),
            (b"AAPL", self._bad(symbol="AAPL", price=10.0, bid=11.0, ask=10.5)),
            (b"AAPL", encode_event(wrong_type)),  # a valid order on the market-data topic
            (b"MIXED", envelope),
            (b"AAPL", self._not_json()),
        ]

    def ingress_values(self) -> list[bytes]:
        """Return ``event`` field values for the Redis ingress stream (all invalid)."""
        return [self._bad(symbol="AAPL", price=-1.0),
                self._bad(symbol="AAPL", price=10.0, bid=11.0, ask=10.5),
                self._not_json()]


def dead_letter_key(payload: str) -> str:
    """Identify a dead letter the way :class:`InvalidFeed` names what it produced."""
    try:
        decoded = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(decoded, dict) and isinstance(decoded.get("event_id"), str):
        return str(decoded["event_id"])
    return payload


async def kill_at_random_after(
    progress: Callable[[], Awaitable[bool]], worker: WorkerProcess, pool: WorkerPool,
    rng: random.Random, what: str,
) -> None:
    """Wait until ``progress()`` holds, then ``kill -9`` ``worker`` up to 1.5 s later.

    The wait makes each kill land while the worker is at work (not while it
    starts); the random delay after it is the random moment, not a sync.
    """
    try:
        await async_wait_for(progress, timeout=PROGRESS_TIMEOUT_S, interval=0.05,
                             message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker_report(pool)}") from None
    await asyncio.sleep(rng.uniform(0.0, 1.5))
    worker.kill()


def worker_report(pool: WorkerPool, limit: int = 12) -> str:
    """Each worker's distinct warnings and errors, then its last lines, for failure messages.

    Faust's start-up tables fill a plain log tail; the warnings say why a worker stalled.
    """
    parts: list[str] = []
    for index, worker in enumerate(pool.started):
        text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
        distinct: dict[str, str] = {}
        for line in text.splitlines():
            if "[WARNING]" in line or "[ERROR]" in line or "Traceback" in line:
                distinct.setdefault(line.split("] ", 3)[-1], line)
        problems = "\n".join(list(distinct.values())[:limit]) or "(none)"
        samples = metrics_of(worker) if worker.alive() else {}
        counters = ", ".join(
            f"{name.removeprefix('silvertine_')}{dict(labels) if len(labels) > 1 else ''}="
            f"{value:g}"
            for (name, labels), value in sorted(samples.items())
            if value and name.endswith("_total") and ("event_type", EVENT_TYPE) in labels)
        parts.append(f"--- worker {index} (pid {worker.pid}, alive={worker.alive()}) ---\n"
                     f"{EVENT_TYPE} counters: {counters or '(none)'}\n"
                     f"distinct warnings/errors:\n{problems}\nlast lines:\n"
                     f"{worker.log_tail(8)}")
    return "\n".join(parts)


async def log_length(redis: Redis) -> int:
    """Entries in ``log:market_data`` (XLEN: cheap enough to poll, unlike reading the log)."""
    return int(await redis.xlen(log_stream(EVENT_TYPE)))


def metric(worker: WorkerProcess, name: str) -> float:
    """One ``{event_type="market_data"}`` sample of a worker's metrics (0 when absent)."""
    return metrics_of(worker).get((name, (("event_type", EVENT_TYPE),)), 0.0)


def raise_if_failed(production: asyncio.Task[int] | None) -> None:
    """Raise a background producer's own error at once instead of waiting out a deadline."""
    if production is not None and production.done() and not production.cancelled():
        error = production.exception()
        if error is not None:
            raise AssertionError("the producer failed") from error


async def wait_for_log_length(
    redis: Redis, at_least: int, pool: WorkerPool, what: str, timeout: float = PROGRESS_TIMEOUT_S,
    production: asyncio.Task[int] | None = None,
) -> int:
    """Poll until ``log:market_data`` holds ``at_least`` entries; return the length seen."""
    async def reached() -> int | None:
        raise_if_failed(production)
        length = await log_length(redis)
        return length if length >= at_least else None

    try:
        length = await async_wait_for(reached, timeout=timeout, interval=0.01,
                                      message=f"log:{EVENT_TYPE} to hold {at_least} ({what})")
    except AssertionError as exc:
        if exc.__cause__ is not None:  # the producer failed: that is the story
            raise
        raise AssertionError(f"{exc}\n{worker_report(pool)}") from None
    assert length is not None
    return length


async def assert_log_is_exactly(
    redis: Redis, expected: Sequence[Event], pool: WorkerPool,
    context: Callable[[], Awaitable[str]] | None = None,
) -> None:
    """Wait for the log to hold every expected event; then check it holds nothing else, once each.

    Args:
        redis: a client of the session's Redis.
        expected: every valid event produced.
        pool: the test's workers, for failure messages.
        context: more state to report if the log never completes (e.g. the ingress stream).
    """
    expected_ids = {event.event_id for event in expected}
    try:
        await wait_for_log_length(redis, len(expected_ids), pool, "everything produced",
                                  timeout=DRAIN_TIMEOUT_S)
    except AssertionError as exc:
        so_far = {event["event_id"] for event in await read_log(redis, EVENT_TYPE)}
        missing_ids = {event.event_id for event in expected} - so_far
        try:
            extra = await asyncio.wait_for(kafka_whereabouts(pool.settings, missing_ids), 30)
        except (TimeoutError, OSError) as diag_exc:  # diagnostics must not hide the failure
            extra = f"kafka diagnostics unavailable: {diag_exc!r}"
        extra += f"\nlog entries first written from offsets: {await logged_offsets(redis)}"
        extra += "\n" + (await context() if context is not None else "")
        raise AssertionError(f"{missing_summary(expected, so_far)}\n"
                             f"{dlq_summary(await read_dlq(redis))}\n{extra}\n{exc}") from None
    logged = await read_log(redis, EVENT_TYPE)
    logged_ids = [event["event_id"] for event in logged]
    missing = expected_ids - set(logged_ids)
    unexpected = set(logged_ids) - expected_ids
    assert not missing, missing_summary(expected, set(logged_ids))
    assert not unexpected, f"{len(unexpected)} logged but not produced: {sorted(unexpected)[:5]}"
    assert_log_invariants(logged)  # no id twice; sequences strictly increase per stream
    assert len(logged) == len(expected_ids)


async def committed_offsets(settings: Settings) -> dict[int, int | None]:
    """The worker group's committed offsets of the market-data topic, read without joining."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                              group_id=settings.app_id, enable_auto_commit=False)
    await reader.start()
    try:
        return {p: await reader.committed(TopicPartition(event_topic(EVENT_TYPE), p))
                for p in range(settings.partitions)}
    finally:
        await reader.stop()


async def logged_offsets(redis: Redis) -> str:
    """Per partition, the message offsets the log's entries were first written from."""
    by_partition: dict[str, set[int]] = {}
    for _, fields in await redis.xrange(log_stream(EVENT_TYPE)) or []:
        raw = (fields or {}).get(b"origin", b"")  # topic/partition/offset#index
        origin = raw.decode() if isinstance(raw, bytes) else str(raw)
        parts = origin.split("#", 1)[0].split("/")
        if len(parts) == 3 and parts[2].isdigit():
            by_partition.setdefault(parts[1], set()).add(int(parts[2]))
    return "; ".join(f"p{p}: {_ranges(sorted(offsets))}"
                     for p, offsets in sorted(by_partition.items()))


def _ranges(numbers: list[int]) -> str:
    """Write sorted integers compactly: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


async def kafka_whereabouts(settings: Settings, missing_ids: set[str]) -> str:
    """Say where missing events are in Kafka (or that they are not), and the group's offsets.

    Tells a consumer-side loss (in the topic, below the committed offset) from a
    producer-side one (never in the topic).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = event_topic(EVENT_TYPE)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    found: dict[int, list[int]] = {}
    lines: list[str] = []
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    try:
                        decoded = json.loads(record.value or b"")
                    except ValueError:
                        continue
                    items = decoded if isinstance(decoded, list) else [decoded]
                    if any(isinstance(i, dict) and i.get("event_id") in missing_ids
                           for i in items):
                        found.setdefault(tp.partition, []).append(record.offset)
        lines.append(f"kafka {topic} end offsets: "
                     f"{ {tp.partition: ends[tp] for tp in partitions} }")
    finally:
        await consumer.stop()
    lines.append("messages holding missing events (partition: offsets): "
                 + (", ".join(f"{p}: {o[0]}..{o[-1]} ({len(o)} msgs)"
                              for p, o in sorted(found.items())) or "none in the topic"))
    lines.append(f"group committed offsets now: {await committed_offsets(settings)}")
    return "\n".join(lines)


def dlq_summary(letters: list[dict[str, str]]) -> str:
    """Count dead letters by reason kind (the text before the first colon), with an example."""
    kinds: dict[str, list[dict[str, str]]] = {}
    for letter in letters:
        kinds.setdefault(letter["reason"].split(":", 1)[0], []).append(letter)
    lines = [f"dlq: {len(letters)} dead letters"]
    for kind, group in sorted(kinds.items()):
        lines.append(f"  {kind}: {len(group)}, e.g. {group[0]['reason'][:160]!r} "
                     f"from {group[0]['origin']}")
    return "\n".join(lines)


def missing_summary(expected: Sequence[Event], logged_ids: set[str]) -> str:
    """Say which produced events are not logged: per symbol, how many and which sequences."""
    by_symbol: dict[str, list[int]] = {}
    for event in expected:
        if event.event_id not in logged_ids:
            by_symbol.setdefault(getattr(event, "symbol", "?"), []).append(event.sequence or 0)
    if not by_symbol:
        return "nothing missing"
    lines = [f"{sum(map(len, by_symbol.values()))} produced events not logged, by symbol:"]
    for symbol, sequences in sorted(by_symbol.items()):
        lines.append(f"  {symbol}: {len(sequences)} missing, sequences {min(sequences)}.."
                     f"{max(sequences)}")
    return "\n".join(lines)


async def assert_dlq_is_exactly(redis: Redis, expected_keys: set[str]) -> list[dict[str, str]]:
    """Wait for every expected dead letter; then check the DLQ holds nothing else.

    Dead letters are at least once (``sinks/dead_letters.py``: they carry no id
    to dedupe on), so a letter written before a kill may be written again on
    redelivery; repeats of an *expected* letter are allowed, anything else is not.
    """
    async def complete() -> list[dict[str, str]] | None:
        letters = await read_dlq(redis)
        seen = {dead_letter_key(letter["payload"]) for letter in letters}
        return letters if seen >= expected_keys else None

    letters = await async_wait_for(complete, timeout=30, interval=0.1,
                                   message=f"dlq to hold all {len(expected_keys)} dead letters")
    assert letters is not None
    keys = {dead_letter_key(letter["payload"]) for letter in letters}
    assert keys == expected_keys, f"unexpected dead letters: {sorted(keys - expected_keys)}"
    not_invalid = [letter for letter in letters if not letter["reason"].startswith("invalid:")]
    assert not not_invalid, f"dead letters for another reason than invalid input: {not_invalid[:3]}"
    return letters


async def raw_producer(settings: Settings) -> AIOKafkaProducer:
    """A plain aiokafka producer (no engine code) for payloads a Publisher cannot build."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=False)
    await producer.start()
    return producer


async def test_kill_9_twice_mid_stream_loses_and_doubles_nothing(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    """SIGKILL the only worker at ~15% and again at ~50% of a live stream; the log stays exact.

    30k sequenced ticks over 20 symbols (4 partitions) go to Kafka as batch
    envelopes over ~20 s, mixed with invalid events (single messages, a
    wrong-type event, a non-JSON value, and envelopes holding a good and a bad
    event). The worker is SIGKILLed twice while it logs; each time it dies
    with envelopes written to the log whose offsets were never committed, so
    the next worker gets them redelivered ("between sink and commit").

    Proves (DESIGN §3, guarantees 1 and 2): every valid id produced is logged,
    each exactly once, in per-symbol sequence order; every invalid one is in
    ``dlq`` and nothing else is; and the restarted worker really was
    redelivered already-logged events (its dedupe hits > 0), so the idempotent
    sink, not luck, kept the log exact.
    """
    ticks = TickSource(SYMBOLS, source="feed-a", per_symbol=15)  # 300 events per round
    invalid = InvalidFeed()
    rounds = 100  # 30,000 valid ticks, one round every 0.2 s
    total = rounds * len(SYMBOLS) * ticks.per_symbol

    first = start_worker(workers)
    async with Publisher(pipeline_settings) as publisher:
        producer = await raw_producer(pipeline_settings)
        try:
            # Production starts once a worker consumes, so the kills below land
            # while the stream still moves instead of on a backlog read in one go.
            await publisher.publish_many(ticks.next_round())
            await wait_for_log_length(redis_client, len(ticks.produced), workers, "warm-up")

            async def send_round(index: int) -> None:
                await publisher.publish_many(ticks.next_round())
                if index % 10 == 0:  # invalid events scattered through the stream
                    for key, value in invalid.kafka_messages():
                        await producer.send_and_wait(event_topic(EVENT_TYPE), value, key=key)

            production = asyncio.create_task(
                produce_paced(send_round, interval_s=0.2, rounds=rounds - 1))
            try:
                # Dedupe hits of restarted workers: each one's count is read before
                # it is killed in turn (a dead worker's metrics are gone).
                redelivered_duplicates = 0.0
                worker = first
                for fraction in (0.15, 0.50):
                    await wait_for_log_length(redis_client, int(total * fraction), workers,
                                              f"{fraction:.0%} before the kill",
                                              production=production)
                    if worker is not first:
                        redelivered_duplicates += await asyncio.to_thread(
                            metric, worker, "silvertine_dedupe_hits_total")
                    worker.kill()
                    at_kill = await log_length(redis_client)
                    assert at_kill < total, f"stream complete before the kill at {fraction:.0%}"
                    worker = start_worker(workers)
                    # Growth past the victim's last entry: the successor resumed.
                    await wait_for_log_length(redis_client, at_kill + 1, workers,
                                              f"progress after the kill at {fraction:.0%}",
                                              production=production)
                await production
            finally:
                production.cancel()
        finally:
            await producer.stop()

    await assert_log_is_exactly(redis_client, ticks.produced + invalid.valid, workers)
    await assert_dlq_is_exactly(redis_client, invalid.produced_keys)
    redelivered_duplicates += await asyncio.to_thread(
        metric, worker, "silvertine_dedupe_hits_total")
    assert redelivered_duplicates > 0, (
        "no restarted worker was redelivered an already-logged event: the kills never "
        f"landed between a log write and its offset commit\n{worker_report(workers)}")
    assert worker.alive(), f"the last worker died\n{worker_report(workers)}"


async def test_kill_9_mid_mirror_loses_and_doubles_nothing(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    """SIGKILL the worker while its ingress mirror holds read-but-unacknowledged entries.

    30k sequenced ticks (and a few invalid entries) wait in ``events:market_data``
    when the worker starts. Once the mirror has moved at least 15% of them,
    the worker is frozen (SIGSTOP) until it is caught with entries in the
    Redis consumer group's pending list, i.e. read from Redis and possibly
    already sent to Kafka but not acknowledged, and then SIGKILLed. A new
    worker must wait out the dead holder's lease, reclaim those entries, and
    send them again.

    Proves (DESIGN §1 ingress mirror, §3 guarantees 1 and 2): after a kill -9
    mid-mirror every valid entry is logged exactly once in sequence order,
    every invalid entry is in ``dlq`` and nothing else is, and the ingress
    stream ends empty with nothing pending.
    """
    ticks = TickSource(SYMBOLS, source="feed-b", per_symbol=50)  # 1,000 events per round
    invalid = InvalidFeed()
    stream = ingress_stream(EVENT_TYPE)
    async with Publisher(pipeline_settings) as publisher:
        for _ in range(30):
            await publisher.publish_many_to_ingress(ticks.next_round())
            for value in invalid.ingress_values():
                await redis_client.xadd(stream, {"event": value})
    total_entries = int(await redis_client.xlen(stream))
    assert total_entries == len(ticks.produced) + 3 * 30

    first = start_worker(workers)

    async def mirrored_enough() -> bool:
        return total_entries - int(await redis_client.xlen(stream)) >= 0.15 * total_entries

    try:
        await async_wait_for(mirrored_enough, timeout=PROGRESS_TIMEOUT_S, interval=0.005,
                             message=f"the mirror to move 15% of {stream}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker_report(workers)}") from None

    # Freeze the worker, look at the pending list, and kill only if it holds
    # entries: a frozen process cannot acknowledge them behind our back.
    pending_at_kill = 0
    deadline = time.monotonic() + 30
    while pending_at_kill == 0:
        assert time.monotonic() < deadline, "never caught the mirror with unacknowledged entries"
        assert int(await redis_client.xlen(stream)) > 0, "the mirror finished before the kill"
        os.kill(first.pid, signal.SIGSTOP)
        try:
            summary = await redis_client.xpending(stream, INGRESS_GROUP)
            pending_at_kill = int(summary["pending"])
        finally:
            if pending_at_kill == 0:  # also on error: never leave a frozen worker behind
                os.kill(first.pid, signal.SIGCONT)
        if pending_at_kill == 0:
            await asyncio.sleep(0.003)  # let it run a little before the next look
    first.kill()  # SIGKILL ends a stopped process too
    remaining_at_kill = int(await redis_client.xlen(stream))
    committed_at_kill = await committed_offsets(pipeline_settings)

    second = start_worker(workers)

    async def ingress_state() -> str:
        pending = await redis_client.xpending(stream, INGRESS_GROUP)
        lease = await redis_client.get(ingress_lease(EVENT_TYPE))
        return (f"at the kill: {pending_at_kill} pending, {remaining_at_kill} unread entries, "
                f"committed offsets {committed_at_kill}; "
                f"now: {await redis_client.xlen(stream)} entries, pending {pending}, "
                f"lease {lease!r}")

    await assert_log_is_exactly(redis_client, ticks.produced, workers, ingress_state)
    await assert_dlq_is_exactly(redis_client, invalid.produced_keys)

    async def drained() -> bool:
        summary = await redis_client.xpending(stream, INGRESS_GROUP)
        return int(await redis_client.xlen(stream)) == 0 and int(summary["pending"]) == 0

    await async_wait_for(drained, timeout=30, interval=0.1,
                         message=f"{stream} to end empty with nothing pending")
    assert 0 < remaining_at_kill < total_entries
    assert second.alive(), f"the second worker died\n{worker_report(workers)}"


async def test_survivor_of_two_takes_over_after_kill_9_then_shares_with_a_joiner(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    """Two workers of one group split 4 partitions; SIGKILL one, the other takes over,
    then a third joins and gets partitions of its own.

    Ticks on 20 symbols (5 per partition) are produced at ~1.5k/s for as long
    as the scenario runs. Both workers of the same app id must have consumed
    events (each one's ``silvertine_events_in_total`` > 0, so the partitions
    were really split), then one is SIGKILLed while production goes on into
    every partition, including those it held.

    Proves (DESIGN §4 scale-out, §5 takeover, §3 guarantees 1 and 2): the
    survivor takes the dead worker's partitions over after the session
    timeout and logs everything produced, exactly once, in sequence order,
    and nothing lands in ``dlq``. A worker joining after the failover must get
    work too: an earlier revision deadlocked there (the survivor's revoke waited
    for messages it had parked unacknowledged, so the joiner never got
    partitions).
    """
    ticks = TickSource(SYMBOLS, source="feed-c", per_symbol=10)  # 200 events per round
    left, right = start_worker(workers), start_worker(workers)
    stop = asyncio.Event()
    async with Publisher(pipeline_settings) as publisher:
        async def send_round(_: int) -> None:
            await publisher.publish_many(ticks.next_round())

        production = asyncio.create_task(produce_paced(send_round, interval_s=0.13, stop=stop))
        try:
            async def events_in(worker: WorkerProcess) -> float:
                # urllib blocks: scrape off the loop so production keeps its pace.
                return await asyncio.to_thread(metric, worker, "silvertine_events_in_total")

            async def both_got_work() -> bool:
                assert not production.done(), "the producer stopped early"
                return await events_in(left) > 0 and await events_in(right) > 0

            try:
                await async_wait_for(both_got_work, timeout=PROGRESS_TIMEOUT_S, interval=0.2,
                                     message="both workers of the group to consume events")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{worker_report(workers)}") from None
            right.kill()
            produced_at_kill = len(ticks.produced)
            first_after_kill = dict(ticks.next_sequence)

            # Production goes on into every partition, the dead worker's too, until
            # every symbol has a logged event produced after the kill: only then has
            # the survivor taken the dead worker's partitions over.
            async def every_symbol_moved_on() -> bool:
                # The last ten rounds' worth of entries is plenty to see every symbol.
                tail = await redis_client.xrevrange(log_stream(EVENT_TYPE),
                                                    count=10 * len(SYMBOLS) * ticks.per_symbol)
                latest: dict[str, int] = {}
                for _, fields in tail or []:
                    event = json.loads(fields[b"event"])  # type: ignore[index]  # bytes keys
                    latest[event["symbol"]] = max(latest.get(event["symbol"], 0),
                                                  event["sequence"])
                return all(latest.get(s, 0) >= first_after_kill[s] for s in SYMBOLS)

            try:
                await async_wait_for(every_symbol_moved_on, timeout=PROGRESS_TIMEOUT_S,
                                     interval=0.2,
                                     message="the survivor to log every symbol past the kill")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{worker_report(workers)}") from None

            joiner = start_worker(workers)

            async def joiner_got_work() -> bool:
                assert not production.done(), "the producer stopped early"
                return await events_in(joiner) > 0

            try:
                await async_wait_for(joiner_got_work, timeout=PROGRESS_TIMEOUT_S, interval=0.2,
                                     message="a worker joining after the failover to consume")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{worker_report(workers)}") from None
        finally:
            stop.set()
            await production

    assert len(ticks.produced) > produced_at_kill
    await assert_log_is_exactly(redis_client, ticks.produced, workers)
    assert await read_dlq(redis_client) == [], "dead letters although every event was valid"
    assert left.alive(), f"the survivor died\n{worker_report(workers)}"
    assert joiner.alive(), f"the joiner died\n{worker_report(workers)}"
