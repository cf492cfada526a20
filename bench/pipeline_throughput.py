"""Scenario: pipeline throughput, end to end, against a plain Faust agent and the raw floor.

Three variants read pre-produced market data from the same Tansu broker and
write to the same redis-server (AOF, ``appendfsync always``), one at a time,
interleaved round by round so the machine's noise hits them alike:

* **pipeline**: a real ``silvertine worker`` subprocess (default settings:
  4 partitions, memory tables, 10 ms fetch wait) on ``silvertine.market_data``
  holding 500-event batch envelopes; decode + validate, sequencing over ~100
  symbols, one idempotent Lua call per message into ``log:market_data``, one
  table write per message.
* **plain Faust agent** (:mod:`bench.plain_agent`): one event per Kafka
  message, one awaited XADD per event, in its own Faust app and worker.
* **raw floor** (:mod:`bench.raw_floor`): aiokafka → pipelined XADD of every
  event of the same envelopes, no checks.

The clock runs from the process's first consumed message (its own mark) to
the moment ``XLEN`` of its Redis stream reaches N (polled every 5 ms here).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.harness import (
    BenchContext,
    BenchError,
    Child,
    free_port,
    settings_env,
    wait_for_mark,
    wait_for_xlen,
)
from bench.profiling import Profile, Sampler
from bench.report import Ratio, Row, Run, ScenarioReport, Target
from silvertine_streams.events import Event, MarketDataEvent, encode_event
from silvertine_streams.kafka_admin import ensure_topics
from silvertine_streams.publisher import Publisher, partition_for
from silvertine_streams.topics import event_topic, log_stream

NAME = "pipeline_throughput"
TITLE = "Pipeline throughput (events/s, end to end)"

SYMBOLS = 100
SOURCE = "bench-feed"
PIPELINE_EVENTS = 200_000
PLAIN_EVENTS = 15_000
FLOOR_EVENTS = PIPELINE_EVENTS  # the floor reads the pipeline's own topic
QUICK_DIVISOR = 10

TARGET_RATE = 100_000.0
TARGET_VS_PLAIN = 20.0

PLAIN_TOPIC = "bench.plain.market_data"
PLAIN_STREAM = "bench:plain:log"
FLOOR_STREAM = "bench:floor:log"
NOTES = Path(__file__).with_name("notes") / f"{NAME}.md"


def make_events(count: int, symbols: int = SYMBOLS) -> list[Event]:
    """Quotes round-robin over ``symbols`` symbols, sequences 1, 2, ... per symbol."""
    names = [f"SYM{i:03d}" for i in range(symbols)]
    events: list[Event] = []
    for i in range(count):
        tick = i // symbols
        mid = 100.0 + (i % 997) * 0.01
        events.append(MarketDataEvent(
            symbol=names[i % symbols], price=mid, volume=float(1 + i % 7),
            bid=mid - 0.01, ask=mid + 0.01, bid_size=100.0, ask_size=200.0,
            source=SOURCE, sequence=tick + 1,
        ))
    return events


async def _produce_singles(ctx: BenchContext, events: list[Event]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=ctx.settings.kafka_bootstrap, acks="all",
                                enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for event in events:
            key = event.partition_key.encode()
            futures.append(await producer.send(
                PLAIN_TOPIC, value=encode_event(event), key=key,
                partition=partition_for(key, ctx.settings.partitions)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(events)


async def _message_count(ctx: BenchContext, topic: str, until: int | None = None,
                         idle_s: float = 1.0) -> int:
    """Count the messages of ``topic`` by reading it from the beginning.

    Tansu's ``ListOffsets`` answers are not record counts (an end offset of 365
    for 375 records was seen), so the bench counts by consuming. Stops at
    ``until`` messages or after ``idle_s`` without any.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=ctx.settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return 0
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        count = 0
        while until is None or count < until:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batches:
                break
            count += sum(len(messages) for messages in batches.values())
        return count
    finally:
        await consumer.stop()


async def _reset_redis(ctx: BenchContext) -> None:
    """Empty Redis and compact its AOF, so every run starts from the same state."""
    redis = ctx.redis()
    try:
        await redis.flushdb()
        await redis.bgrewriteaof()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = await redis.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get(
                    "aof_rewrite_scheduled"):
                break
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()


async def _forks(ctx: BenchContext) -> int:
    redis = ctx.redis()
    try:
        return int((await redis.info("stats")).get("total_forks", 0))
    finally:
        await redis.aclose()


async def _measure(
    ctx: BenchContext, child: Child, mark: Path, stream: str, events: int,
    sampler_output: Path | None = None,
) -> tuple[Run, Sampler | None]:
    """Start ``child``, time it from its mark to ``XLEN stream == events``."""
    redis = ctx.redis()
    sampler: Sampler | None = None
    forks_before = await _forks(ctx)
    try:
        child.start()
        started = await wait_for_mark(mark, child)
        cpu0, servers0 = child.cpu(), ctx.server_cpu()
        if sampler_output is not None:
            sampler = Sampler(child.pid, sampler_output).start()
        timeout = max(60.0, events / 2_000)
        finished = await wait_for_xlen(redis, stream, events, child, timeout)
        cpu1, servers1 = child.cpu(), ctx.server_cpu()
        if sampler is not None:
            sampler.stop()
        cpu = {"worker": None if cpu0 is None or cpu1 is None else cpu1 - cpu0}
        for name in servers0:
            a, b = servers0[name], servers1[name]
            cpu[name] = None if a is None or b is None else b - a
        run = Run(events=events, seconds=finished - started, cpu_s=cpu, ended_at=finished)
        await asyncio.sleep(0.3)
        final = int(await redis.xlen(stream))
        if final != events:
            raise BenchError(f"{stream} holds {final} entries, expected exactly {events}")
        forks = await _forks(ctx) - forks_before
        if forks:
            run.extra["redis_forks"] = forks
        return run, sampler
    finally:
        if sampler is not None:
            sampler.stop()
        await redis.aclose()


async def _changelog_flushed(ctx: BenchContext, app_id: str, expected: int,
                             log_done: float) -> str:
    """Wait until the sequence table's changelog holds ``expected`` records.

    Faust defers changelog sends (DESIGN §5): this tells how long after the
    log was complete the worker still had table work in flight.
    """
    topic = f"{app_id}-sequence-market_data-changelog"
    count = await _message_count(ctx, topic, until=expected, idle_s=5.0)
    if count >= expected:
        return f"{count} records (checked +{(time.time() - log_done) * 1000:.0f}ms)"
    return f"only {count}/{expected} records 5s after the log was complete"


class _Variants:
    def __init__(self, ctx: BenchContext, pipeline_n: int, plain_n: int, floor_n: int,
                 envelopes: int) -> None:
        self.ctx = ctx
        self.pipeline_n, self.plain_n, self.floor_n = pipeline_n, plain_n, floor_n
        self.envelopes = envelopes
        self.runs_dir = ctx.work_dir / NAME

    def _paths(self, label: str) -> tuple[Path, Path, Path]:
        run_dir = self.runs_dir / f"{label}-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir(parents=True)
        return run_dir, run_dir / "mark", run_dir / "process.log"

    async def pipeline(self, label: str, profile_to: Path | None = None
                       ) -> tuple[Run, Sampler | None]:
        await _reset_redis(self.ctx)
        run_dir, mark, log = self._paths(label)
        app_id = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        settings = self.ctx.settings.model_copy(update={
            "app_id": app_id, "data_dir": run_dir / "data", "web_port": free_port(),
            "metrics_port": 0,
        })
        env = settings_env(settings, BENCH_MARK_FILE=str(mark))
        child = Child.python_module("silvertine worker", "bench.silvertine_worker", env, log)
        try:
            run, sampler = await _measure(self.ctx, child, mark, log_stream("market_data"),
                                          self.pipeline_n, profile_to)
            run.extra["changelog"] = await _changelog_flushed(
                self.ctx, app_id, self.envelopes, run.ended_at)
            return run, sampler
        finally:
            child.stop()

    async def plain(self, label: str) -> Run:
        await _reset_redis(self.ctx)
        run_dir, mark, log = self._paths(label)
        s = self.ctx.settings
        env = settings_env(
            s, BENCH_APP_ID=f"bench-{label}-{uuid.uuid4().hex[:6]}",
            BENCH_KAFKA_URL=str(s.kafka_url), BENCH_REDIS_URL=str(s.redis_url),
            BENCH_TOPIC=PLAIN_TOPIC, BENCH_STREAM=PLAIN_STREAM,
            BENCH_DATADIR=str(run_dir / "data"), BENCH_WEB_PORT=str(free_port()),
            BENCH_PARTITIONS=str(s.partitions), BENCH_MARK_FILE=str(mark),
        )
        child = Child.python_module("plain faust agent", "bench.plain_agent", env, log)
        try:
            run, _ = await _measure(self.ctx, child, mark, PLAIN_STREAM, self.plain_n)
            return run
        finally:
            child.stop()

    async def floor(self, label: str) -> Run:
        await _reset_redis(self.ctx)
        run_dir, mark, log = self._paths(label)
        s = self.ctx.settings
        env = settings_env(
            s, BENCH_KAFKA_URL=str(s.kafka_url), BENCH_REDIS_URL=str(s.redis_url),
            BENCH_TOPIC=event_topic("market_data"), BENCH_STREAM=FLOOR_STREAM,
            BENCH_PARTITIONS=str(s.partitions), BENCH_EVENTS=str(self.floor_n),
            BENCH_MARK_FILE=str(mark),
        )
        child = Child.python_module("raw floor", "bench.raw_floor", env, log)
        try:
            run, _ = await _measure(self.ctx, child, mark, FLOOR_STREAM, self.floor_n)
            return run
        finally:
            child.stop()


async def run(ctx: BenchContext) -> ScenarioReport:
    divisor = QUICK_DIVISOR if ctx.quick else 1
    pipeline_n, plain_n = PIPELINE_EVENTS // divisor, PLAIN_EVENTS // divisor
    say = ctx.say

    say(f"[{NAME}] declaring topics, building {pipeline_n:,} events over {SYMBOLS} symbols")
    await ensure_topics(ctx.settings)
    await ensure_topics(ctx.settings, [PLAIN_TOPIC])
    events = make_events(pipeline_n)
    started = time.monotonic()
    async with Publisher(ctx.settings) as publisher:
        envelopes = 0
        for i in range(0, len(events), 20_000):  # keep the producer's buffer modest
            envelopes += await publisher.publish_many(events[i:i + 20_000])
    await _produce_singles(ctx, events[:plain_n])
    produced = await _message_count(ctx, event_topic("market_data"))
    singles = await _message_count(ctx, PLAIN_TOPIC)
    if produced != envelopes or singles != plain_n:
        raise BenchError(f"pre-produce mismatch: {produced}/{envelopes} envelopes, "
                         f"{singles}/{plain_n} single events")
    say(f"[{NAME}] produced {envelopes} envelopes + {singles:,} single events "
        f"in {time.monotonic() - started:.1f}s")
    del events

    variants = _Variants(ctx, pipeline_n, plain_n, pipeline_n, envelopes)
    rows = {
        "pipeline": Row("pipeline", "pipeline: silvertine worker, "
                                    f"{ctx.settings.envelope_max_events}-event envelopes"),
        "plain": Row("plain", "plain Faust agent: 1 event/message, 1 XADD/event"),
        "floor": Row("floor", "raw floor: aiokafka → pipelined XADD (same envelopes)"),
    }
    for round_no in range(1, ctx.runs + 1):
        for key in ("pipeline", "plain", "floor"):
            label = f"{key}-r{round_no}"
            if key == "pipeline":
                result, _ = await variants.pipeline(label)
            elif key == "plain":
                result = await variants.plain(label)
            else:
                result = await variants.floor(label)
            rows[key].runs.append(result)
            say(f"[{NAME}] round {round_no}/{ctx.runs} {key:8s} {result.rate:>10,.0f} events/s "
                f"({result.events:,} in {result.seconds:.2f}s; worker CPU "
                f"{(result.cpu_us_per_event('worker') or float('nan')):.1f} µs/event) "
                f"{result.extra}")

    report = ScenarioReport(
        name=NAME, title=TITLE, description=_description(pipeline_n, plain_n, envelopes, ctx),
        rows=list(rows.values()),
        ratios=[Ratio("pipeline / plain Faust agent", "pipeline", "plain"),
                Ratio("pipeline / raw floor", "pipeline", "floor")],
    )
    rate = rows["pipeline"].median
    vs_plain = report.ratio_values(report.ratios[0])[0]
    report.targets = [
        Target(f"≥ {TARGET_RATE:,.0f} events/s per worker", rate >= TARGET_RATE,
               f"{rate:,.0f} events/s (median)"),
        Target(f"≥ {TARGET_VS_PLAIN:.0f}× the plain agent", vs_plain >= TARGET_VS_PLAIN,
               f"{vs_plain:.1f}×"),
    ]
    missed = not all(t.met for t in report.targets)
    if ctx.profile == "always" or (ctx.profile == "auto" and missed):
        say(f"[{NAME}] profiling one more pipeline run with py-spy "
            f"({'target missed' if missed else 'asked for'})")
        report.sections.append(("Profile of the pipeline worker (py-spy)",
                                await _profile(variants, ctx)))
    if NOTES.exists():
        report.sections.append(("Analysis and recommended product changes", NOTES.read_text()))
    return report


async def _profile(variants: _Variants, ctx: BenchContext) -> str:
    output = ctx.work_dir / NAME / "pipeline-profile.txt"
    try:
        result, _ = await variants.pipeline("pipeline-profile", profile_to=output)
    except (BenchError, RuntimeError) as exc:
        return f"Profiling failed: {exc}"
    if not output.exists():
        return f"py-spy wrote no output; see {output.with_suffix('.log')}"
    profile = Profile.load(output)
    cpu = result.cpu_us_per_event("worker")
    head = (
        f"One extra pipeline run (not in the table above) with py-spy attached "
        f"(`--nonblocking`, 250 Hz): {result.rate:,.0f} events/s, worker CPU "
        f"{cpu or float('nan'):.2f} µs/event, Redis CPU "
        f"{result.cpu_us_per_event('redis') or float('nan'):.2f} µs/event. "
        f"The ≈ µs/event column spreads the worker's CPU over the samples. "
        f"Raw folded stacks: `{output}` (feed them to flamegraph.pl or speedscope)."
    )
    return head + "\n\n" + profile.markdown(top=25, cpu_us_per_event=cpu)


def _description(pipeline_n: int, plain_n: int, envelopes: int, ctx: BenchContext) -> str:
    return (
        (__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nThis run: pipeline and floor {pipeline_n:,} events ({envelopes} envelopes, "
        f"{SYMBOLS} symbols, sequences 1.. per symbol), plain agent {plain_n:,} single events "
        f"(the first {plain_n:,} of the same events), {ctx.settings.partitions} partitions, "
        f"{ctx.runs} rounds. Redis is flushed and its AOF compacted before every run. CPU "
        "columns: CPU seconds each process burned between the first consumed message and "
        "the end, per event (worker = the process under test; redis and kafka = the "
        "embedded servers)."
    )
