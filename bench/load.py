"""Paced load, and latency read back from the log: shared by latency, priority and scale.

Latency is measured without trusting the process under test: every event
carries ``ts_ns`` = the time it was *due* to be published (its tick's scheduled
time, so a late publisher counts against the figure, not for it), and the Redis
stream entry id that the log write created starts with the Redis server's clock
in ms. Both clocks are this machine's, so

    latency = entry id ms + 0.5 − ts_ns / 10⁶

(ms; the id is truncated to the ms, hence +0.5, ±0.5 ms). Events that never
reached the log count as infinitely late in the percentiles.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from silvertine_streams.events import Event, MarketDataEvent, encode_batch
from silvertine_streams.kafka.envelopes import group_envelopes
from silvertine_streams.settings import Settings


class _Stamp(msgspec.Struct):
    ts_ns: int
    source: str = ""
    symbol: str = ""


_STAMP = msgspec.json.Decoder(_Stamp)


@dataclass
class Entry:
    """One log entry, as much as the bench needs of it."""

    ms: int
    ts_ns: int
    source: str
    symbol: str
    origin: str

    @property
    def partition(self) -> int:
        """The Kafka partition it came from (``silvertine.<type>/<p>/<offset>#<i>``)."""
        return int(self.origin.split("/")[1]) if self.origin.count("/") >= 2 else -1

    @property
    def latency_ms(self) -> float:
        return self.ms + 0.5 - self.ts_ns / 1e6


def raw_client(redis: Redis) -> Redis:
    """A client on ``redis``'s pool whose XRANGE replies stay raw lists (no dict per entry)."""
    raw = Redis(connection_pool=redis.connection_pool)
    raw.set_response_callback("XRANGE", lambda response, **options: response)
    return raw


async def read_log(redis: Redis, stream: str, start_ms: int = 0, page: int = 10_000
                   ) -> list[Entry]:
    """Every entry of ``stream`` written at or after ``start_ms`` (raw replies, no dicts)."""
    raw = raw_client(redis)
    cursor = f"{start_ms}-0"
    entries: list[Entry] = []
    while True:
        reply = await raw.execute_command("XRANGE", stream, cursor, "+", "COUNT", page)
        for entry_id, fields in reply:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            stamp = _STAMP.decode(values[b"event"])
            entries.append(Entry(int(entry_id.split(b"-")[0]), stamp.ts_ns, stamp.source,
                                 stamp.symbol, values.get(b"origin", b"").decode()))
        if len(reply) < page:
            return entries
        ms, _, seq = reply[-1][0].decode().partition("-")
        cursor = f"{ms}-{int(seq) + 1}"


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_values(latencies: list[float], expected: int) -> dict[str, float]:
    """p50/p99/max in ms; missing events (``expected`` − found) count as infinite."""
    ordered = sorted(latencies) + [math.inf] * max(0, expected - len(latencies))
    return {"p50_ms": percentile(ordered, 0.50), "p99_ms": percentile(ordered, 0.99),
            "max_ms": ordered[-1] if ordered else math.nan,
            "logged_pct": 100.0 * len(latencies) / expected if expected else math.nan}


class QuoteFeed:
    """Quotes round-robin over ``symbols`` symbols of one ``source``, sequences 1.. each."""

    def __init__(self, source: str, symbols: int = 100, prefix: str = "SYM") -> None:
        self.source = source
        self.names = [f"{prefix}{i:03d}" for i in range(symbols)]
        self.sent = 0

    def next(self, count: int, ts_ns: int | None = None) -> list[Event]:
        events: list[Event] = []
        names, n = self.names, len(self.names)
        for i in range(self.sent, self.sent + count):
            mid = 100.0 + (i % 997) * 0.01
            extra: dict[str, Any] = {} if ts_ns is None else {"ts_ns": ts_ns}
            events.append(MarketDataEvent(
                symbol=names[i % n], price=mid, volume=1.0, bid=mid - 0.01, ask=mid + 0.01,
                source=self.source, sequence=i // n + 1, **extra))
        self.sent += count
        return events


def producer(settings: Settings) -> AIOKafkaProducer:
    """A producer configured as :class:`silvertine_streams.kafka.publisher.Publisher`'s."""
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                            enable_idempotence=False, linger_ms=1,
                            max_request_size=16 * 1024 * 1024)


async def send_envelopes(kafka: AIOKafkaProducer, settings: Settings, events: Sequence[Event],
                         topic: str | None = None) -> int:
    """``Publisher.publish_many`` (same grouping and encoding, awaited acks), without its
    lag checks, optionally to another topic (the raw floor's). Returns messages sent."""
    envelopes = group_envelopes(events, settings.partitions, settings.envelope_max_events)
    futures = [await kafka.send(topic or envelope_topic, value=encode_batch(chunk),
                                key=chunk[0].partition_key.encode(), partition=partition)
               for envelope_topic, partition, chunk in envelopes]
    await asyncio.gather(*futures)
    return len(futures)


@dataclass
class Paced:
    """What a paced run offered."""

    events: int = 0
    messages: int = 0
    seconds: float = 0.0
    started_ns: int = 0


async def paced(send: Callable[[int, int], Awaitable[int]], rate: float, tick_s: float,
                seconds: float) -> Paced:
    """Call ``send(count, ts_ns)`` every ``tick_s`` with the events due at ``rate``.

    Ticks are on an absolute schedule; a late tick sends what is due (the offered
    rate holds) and stamps its scheduled time, so publisher lateness counts as
    latency. ``send`` returns the Kafka messages it sent.
    """
    result = Paced(started_ns=time.time_ns())
    start = time.monotonic()
    tick = 0
    while True:
        tick += 1
        due_at = tick * tick_s
        if due_at > seconds:
            break
        delay = start + due_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        count = int(rate * due_at) - result.events
        if count > 0:
            result.messages += await send(count, result.started_ns + int(due_at * 1e9))
            result.events += count
    result.seconds = time.monotonic() - start
    return result


async def wait_for_length(redis: Redis, stream: str, length: int, timeout_s: float) -> bool:
    """Poll ``XLEN`` until it reaches ``length``; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if int(await redis.xlen(stream)) >= length:
            return True
        await asyncio.sleep(0.02)
    return False


async def scrape(port: int, name: str, labels: str = "") -> dict[str, float]:
    """``name`` samples from a worker's ``/metrics`` whose labels contain ``labels``."""
    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    text = await asyncio.to_thread(fetch)
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def stage_means(port: int, before: dict[str, float], event_type: str
                      ) -> tuple[dict[str, float], dict[str, float]]:
    """Mean of each ``silvertine_stage_latency_seconds`` stage since ``before`` (ms per
    message), and the new snapshot."""
    now = await scrape(port, "silvertine_stage_latency_seconds", f'event_type="{event_type}"')
    means = {}
    for stage in ("to_topic", "to_agent", "to_log", "end_to_end"):
        key = f'{{event_type="{event_type}",stage="{stage}"}}'
        total = now.get(f"silvertine_stage_latency_seconds_sum{key}", 0.0) - before.get(
            f"silvertine_stage_latency_seconds_sum{key}", 0.0)
        count = now.get(f"silvertine_stage_latency_seconds_count{key}", 0.0) - before.get(
            f"silvertine_stage_latency_seconds_count{key}", 0.0)
        means[f"{stage}_ms"] = total / count * 1000 if count else math.nan
    return means, now
