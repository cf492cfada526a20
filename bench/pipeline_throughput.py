"""Scenario: pipeline throughput, end to end, against a plain Faust agent and the raw floor.

Four variants read pre-produced market data from the same Tansu broker and
write to the same redis-server (AOF, `appendfsync always`), one at a time,
interleaved round by round so the machine's noise hits them alike:

* **pipeline**: a real `silvertine worker` subprocess (the product's default
  settings) on `silvertine.market_data` holding batch envelopes; decode +
  validate, sequencing over ~100 symbols, one idempotent Lua call per batch
  of fetched messages into `log:market_data`, one table write per changed
  partition per offset commit. No handler is subscribed, so no handler group runs.
* **handlers**: the same worker with a handler on market data
  (`bench/handler_load.py`, in-memory work only): the app's handler group
  follows `log:market_data` through its Redis consumer group and acknowledges
  each batch after dispatch (the durable position). Its clock runs until the
  group has acknowledged all N entries; `log_done_s` is when the log was full.
* **plain Faust agent** (`bench/plain_agent.py`): one event per Kafka
  message, one awaited XADD per event, in its own Faust app and worker.
* **raw floor** (`bench/raw_floor.py`): aiokafka → pipelined XADD of every
  event of the same envelopes, no checks.

The clock runs from the process's first consumed message (its own mark) to
the moment `XLEN` of its Redis stream reaches N (polled every 5 ms here).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from bench.harness import (
    SOURCE_TREE,
    BenchContext,
    BenchError,
    Child,
    Experiment,
    child_env,
    floor,
    free_port,
    worker,
)
from bench.measure import count_messages, measure_until_xlen, reset_redis
from bench.profiling import Profile, Sampler
from bench.report import Ratio, Row, Run, ScenarioReport, Target
from silvertine_streams.events import Event, MarketDataEvent, encode_event
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.kafka.publisher import Publisher, partition_for
from silvertine_streams.topics import event_topic, handler_progress, log_stream

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


async def _changelog_flushed(ctx: BenchContext, app_id: str, log_done: float) -> str:
    """Count the sequence table's changelog records once the log is complete.

    The worker writes the table once per changed partition before each offset
    commit (not per message), so this is a handful of records; Faust defers
    changelog sends (DESIGN §5), so they are counted until none came for 2 s.
    """
    topic = f"{app_id}-sequence-market_data-changelog"
    count = await count_messages(ctx, topic, idle_s=2.0)
    return f"{count} records, counted by +{(time.time() - log_done) * 1000:.0f}ms"


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

    async def pipeline(self, label: str, profile_to: Path | None = None,
                       experiment: Experiment | None = None,
                       handlers: bool = False) -> tuple[Run, Sampler | None]:
        await reset_redis(self.ctx)
        env = {"SILVERTINE_HANDLERS": HANDLERS} if handlers else None
        w = worker(self.ctx, NAME, label, experiment=experiment, env=env)
        handled = (handler_progress(w.settings.app_id), "market_data") if handlers else None
        try:
            run, sampler = await measure_until_xlen(
                self.ctx, w.child, w.mark, log_stream("market_data"), self.pipeline_n,
                profile_to, handled=handled)
            run.extra["changelog"] = await _changelog_flushed(
                self.ctx, w.settings.app_id, run.ended_at)
            return run, sampler
        finally:
            w.child.stop()

    async def plain(self, label: str) -> Run:
        await reset_redis(self.ctx)
        run_dir, mark, log = self._paths(label)
        s = self.ctx.settings
        env = child_env(
            s, BENCH_APP_ID=f"bench-{label}-{uuid.uuid4().hex[:6]}",
            BENCH_KAFKA_URL=str(s.kafka_url), BENCH_REDIS_URL=str(s.redis_url),
            BENCH_TOPIC=PLAIN_TOPIC, BENCH_STREAM=PLAIN_STREAM,
            BENCH_DATADIR=str(run_dir / "data"), BENCH_WEB_PORT=str(free_port()),
            BENCH_PARTITIONS=str(s.partitions), BENCH_MARK_FILE=str(mark),
        )
        child = Child.python_module("plain faust agent", "bench.plain_agent", env, log)
        try:
            run, _ = await measure_until_xlen(self.ctx, child, mark, PLAIN_STREAM,
                                              self.plain_n)
            return run
        finally:
            child.stop()

    async def floor(self, label: str) -> Run:
        await reset_redis(self.ctx)
        w = floor(self.ctx, NAME, label, topic=event_topic("market_data"), stream=FLOOR_STREAM,
                  events=self.floor_n)
        try:
            run, _ = await measure_until_xlen(self.ctx, w.child, w.mark, FLOOR_STREAM,
                                              self.floor_n)
            return run
        finally:
            w.child.stop()


VARIANTS = ("pipeline", "handlers", "plain", "floor")
HANDLERS = "bench.handler_load:setup"
TARGET_HANDLER_COST = 0.10
"""Position tracking may cost at most this fraction of the pipeline's throughput."""


async def run(ctx: BenchContext) -> ScenarioReport:
    """Options (``-o KEY=VALUE``): ``variants`` (comma list of pipeline, handlers, plain,
    floor; experiments always run), ``events`` (pipeline and floor), ``plain_events``,
    ``profile_variant`` (``handlers``: profile the worker with handlers instead)."""
    divisor = QUICK_DIVISOR if ctx.quick else 1
    pipeline_n = int(ctx.options.get("events", PIPELINE_EVENTS // divisor))
    plain_n = int(ctx.options.get("plain_events", PLAIN_EVENTS // divisor))
    chosen = [v for v in ctx.options.get("variants", ",".join(VARIANTS)).split(",") if v]
    if unknown := set(chosen) - set(VARIANTS):
        raise BenchError(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
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
    produced = await count_messages(ctx, event_topic("market_data"))
    if produced != envelopes:
        raise BenchError(f"pre-produce mismatch: {produced}/{envelopes} envelopes")
    if "plain" in chosen:
        await _produce_singles(ctx, events[:plain_n])
        singles = await count_messages(ctx, PLAIN_TOPIC)
        if singles != plain_n:
            raise BenchError(f"pre-produce mismatch: {singles}/{plain_n} single events")
    say(f"[{NAME}] produced {envelopes} envelopes (+ {plain_n if 'plain' in chosen else 0:,} "
        f"single events) in {time.monotonic() - started:.1f}s")
    del events

    variants = _Variants(ctx, pipeline_n, plain_n, pipeline_n, envelopes)
    rows: dict[str, Row] = {}
    if "pipeline" in chosen:
        rows["pipeline"] = Row("pipeline", "pipeline: silvertine worker, "
                               f"{ctx.settings.envelope_max_events}-event envelopes")
    for experiment in ctx.experiments:
        where = "" if experiment.source_tree == SOURCE_TREE else f" from `{experiment.source_tree}`"
        settings = ", ".join(f"{k}={v}" for k, v in experiment.env)
        rows[f"exp:{experiment.name}"] = Row(
            f"exp:{experiment.name}",
            f"experiment **{experiment.name}**: pipeline{where}{' with ' if settings else ''}"
            f"{settings}")
    if "handlers" in chosen:
        rows["handlers"] = Row("handlers", "handlers: the same worker, a handler on market "
                               "data, the handler group's durable position on")
    if "plain" in chosen:
        rows["plain"] = Row("plain", "plain Faust agent: 1 event/message, 1 XADD/event")
    if "floor" in chosen:
        rows["floor"] = Row("floor", "raw floor: aiokafka → pipelined XADD (same envelopes)")
    experiments = {f"exp:{e.name}": e for e in ctx.experiments}
    for round_no in range(1, ctx.runs + 1):
        for key in rows:
            label = f"{key.replace(':', '-')}-r{round_no}"
            if key == "pipeline" or key in experiments:
                result, _ = await variants.pipeline(label, experiment=experiments.get(key))
            elif key == "handlers":
                result, _ = await variants.pipeline(label, handlers=True)
            elif key == "plain":
                result = await variants.plain(label)
            else:
                result = await variants.floor(label)
            rows[key].runs.append(result)
            say(f"[{NAME}] round {round_no}/{ctx.runs} {key:12s} {result.rate:>10,.0f} events/s "
                f"({result.events:,} in {result.seconds:.2f}s; worker CPU "
                f"{(result.cpu_us_per_event('worker') or float('nan')):.1f} µs/event) "
                f"{result.extra}")

    report = ScenarioReport(
        name=NAME, title=TITLE, description=_description(pipeline_n, plain_n, envelopes, ctx),
        rows=list(rows.values()),
    )
    reference = "exp:base" if "exp:base" in rows else "pipeline" if "pipeline" in rows else None
    if reference is not None:
        for key in experiments:
            if key != reference:
                report.ratios.append(Ratio(f"{key} / {reference}", key, reference))
    if "pipeline" in rows:
        if "plain" in rows:
            report.ratios.append(Ratio("pipeline / plain Faust agent", "pipeline", "plain"))
        if "floor" in rows:
            report.ratios.append(Ratio("pipeline / raw floor", "pipeline", "floor"))
        if "handlers" in rows:
            report.ratios.append(Ratio("with handlers / without", "handlers", "pipeline"))
            cost = 1.0 - rows["handlers"].median / rows["pipeline"].median
            report.targets.append(Target(
                f"handler groups' position tracking costs ≤ {TARGET_HANDLER_COST:.0%}",
                cost <= TARGET_HANDLER_COST, f"{cost:.1%} of throughput (medians)"))
        rate = rows["pipeline"].median
        report.targets.append(Target(f"≥ {TARGET_RATE:,.0f} events/s per worker",
                                     rate >= TARGET_RATE, f"{rate:,.0f} events/s (median)"))
        if "plain" in rows:
            vs_plain = rate / rows["plain"].median
            report.targets.append(Target(f"≥ {TARGET_VS_PLAIN:.0f}× the plain agent",
                                         vs_plain >= TARGET_VS_PLAIN, f"{vs_plain:.1f}×"))
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
        result, _ = await variants.pipeline(
            "pipeline-profile", profile_to=output,
            handlers=ctx.options.get("profile_variant") == "handlers")
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
        f"worker settings: envelopes of {ctx.settings.envelope_max_events}, fetch wait "
        f"{ctx.settings.fetch_wait_ms} ms, tables `{ctx.settings.table_store}`; "
        f"{ctx.runs} rounds. Redis is flushed and its AOF compacted before every run. CPU "
        "columns: CPU seconds each process burned between the first consumed message and "
        "the end, per event (worker = the process under test; redis and kafka = the "
        "embedded servers)."
    )
