"""Scenario: single-event messages, as most external producers send them.

A Java OMS, a venue gateway on librdkafka or a Go feed handler sends **one
event per Kafka message**. 20,000 such market-data messages (16 symbols,
sequences 1.. per symbol) are produced once with confluent-kafka (librdkafka,
the Java client's `murmur2_random` partitioner) before any consumer starts;
then each variant reads all of them from the same Tansu broker into the same
redis-server (AOF, `appendfsync always`), one at a time, interleaved round by
round so the machine's noise hits them alike:

* **worker**: a real `silvertine worker` subprocess (a fresh consumer group
  each run): decode + validate, sequencing, the idempotent Lua sink, commits,
  the sequence table, everything. `SILVERTINE_OVERFLOW_POLICIES=market_data=block`:
  a worker started on a backlog is overloaded by definition and would
  (correctly, and counted) conflate the ticks, which would measure shedding,
  not throughput.
* **Quix Streams 3** (`bench/quix_consumer.py`, a peer): a Quix `Application`
  (a fresh consumer group, earliest offset) with Quix's `json` value
  deserialiser and a `BatchingSink` that XADDs each checkpoint's items (values
  serialised back to JSON) in one pipelined round trip; checkpoints every 0.1 s
  (`commit_interval`; Quix's default of 5 s would make the last checkpoint
  longer than the other variants' whole run). No validation, dedupe or
  sequencing. It runs from a venv of its own, `bench/.venv-quix` (built on
  first use by `bench/peers.py`, pinned): installing Quix into the project's
  venv downgrades pydantic, pydantic-settings and confluent-kafka.
* **raw floor** (`bench/raw_floor.py`): aiokafka `getmany` → pipelined XADD of
  every message as it is, one round trip per fetch; no checks, no group.

The clock runs from the process's first consumed message (its own mark) to
the moment `XLEN` of its Redis stream reaches N (polled every 5 ms).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from confluent_kafka import Producer

from bench.harness import (
    SOURCE_TREE,
    BenchContext,
    BenchError,
    Child,
    Experiment,
    Worker,
    child_env,
    floor,
    run_dir,
    worker,
)
from bench.measure import count_messages, measure_until_xlen, reset_redis
from bench.peers import quix_python, quix_version
from bench.pipeline_throughput import make_events
from bench.profiling import Profile
from bench.report import Ratio, Row, Run, ScenarioReport, Target
from silvertine_streams.events import Event, encode_event
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.topics import event_topic, log_stream

NAME = "single"
TITLE = "Single-event messages (events/s, end to end)"

SYMBOLS = 16
EVENTS = 20_000
QUICK_DIVISOR = 10
FLOOR_STREAM = "bench:floor:log"
QUIX_STREAM = "bench:quix:log"
QUIX_SCRIPT = Path(__file__).with_name("quix_consumer.py")
QUIX_COMMIT_S = 0.1
TARGET_VS_FLOOR = 0.5
WORKER_ENV = {"SILVERTINE_OVERFLOW_POLICIES": "market_data=block"}


async def produce_singles(ctx: BenchContext, events: list[Event]) -> None:
    """Produce one message per event with librdkafka, keyed by symbol; wait for all."""
    producer = Producer({
        "bootstrap.servers": ",".join(ctx.settings.kafka_bootstrap),
        "partitioner": "murmur2_random",  # the Java client's, and aiokafka's
        "linger.ms": 5,
        "acks": "all",
        "enable.idempotence": False,  # Tansu refuses InitProducerId (DESIGN §5)
    })
    topic = event_topic("market_data")
    for event in events:
        while True:
            try:
                producer.produce(topic, value=encode_event(event),
                                 key=event.partition_key.encode())
                break
            except BufferError:
                await asyncio.to_thread(producer.poll, 0.1)
    remaining = await asyncio.to_thread(producer.flush, 60)
    if remaining:
        raise BenchError(f"{remaining} single-event messages not delivered")


async def run(ctx: BenchContext) -> ScenarioReport:
    """Options (``-o KEY=VALUE``): ``variants`` (comma list of worker, quix, floor;
    experiments always run), ``events``, ``quix_commit_s`` (Quix's commit interval)."""
    events_n = int(ctx.options.get("events", EVENTS // (QUICK_DIVISOR if ctx.quick else 1)))
    chosen = [v for v in ctx.options.get("variants", "worker,quix,floor").split(",") if v]
    if unknown := set(chosen) - {"worker", "quix", "floor"}:
        raise BenchError(f"unknown variants {sorted(unknown)}; known: worker, quix, floor")
    say = ctx.say
    quix_note = ""
    if "quix" in chosen:
        try:
            ctx.options["quix_python"] = str(quix_python(say=say))
            quix_note = f"Quix: {quix_version(Path(ctx.options['quix_python']))}."
        except BenchError as exc:
            chosen.remove("quix")
            quix_note = f"**Quix Streams was not measured:** {exc}"
            say(f"[{NAME}] {quix_note}")
    await ensure_topics(ctx.settings)
    started = time.monotonic()
    await produce_singles(ctx, make_events(events_n, SYMBOLS))
    produced = await count_messages(ctx, event_topic("market_data"))
    if produced != events_n:
        raise BenchError(f"pre-produce mismatch: {produced}/{events_n} messages")
    say(f"[{NAME}] produced {events_n:,} single-event messages over {SYMBOLS} symbols in "
        f"{time.monotonic() - started:.1f}s")

    rows: dict[str, Row] = {}
    if "worker" in chosen:
        rows["worker"] = Row("worker", "silvertine worker, 1 event/message")
    for experiment in ctx.experiments:
        where = "" if experiment.source_tree == SOURCE_TREE else f" from `{experiment.source_tree}`"
        settings = ", ".join(f"{k}={v}" for k, v in experiment.env)
        rows[f"exp:{experiment.name}"] = Row(
            f"exp:{experiment.name}", f"experiment **{experiment.name}**: worker{where}"
            f"{' with ' if settings else ''}{settings}")
    if "quix" in chosen:
        rows["quix"] = Row("quix", "Quix Streams 3: json deserialiser → batching sink, "
                           "pipelined XADD per checkpoint")
    if "floor" in chosen:
        rows["floor"] = Row("floor", "raw floor: aiokafka getmany → pipelined XADD per fetch")
    experiments = {f"exp:{e.name}": e for e in ctx.experiments}

    for round_no in range(1, ctx.runs + 1):
        for key in rows:
            label = f"{key.replace(':', '-')}-r{round_no}"
            await reset_redis(ctx)
            result = await _measure(ctx, key, label, events_n, experiments)
            rows[key].runs.append(result)
            say(f"[{NAME}] round {round_no}/{ctx.runs} {key:12s} {result.rate:>10,.0f} events/s "
                f"({result.events:,} in {result.seconds:.2f}s; worker CPU "
                f"{(result.cpu_us_per_event('worker') or float('nan')):.1f} µs/event) "
                f"{result.extra}")

    report = ScenarioReport(name=NAME, title=TITLE,
                            description=_description(events_n, ctx, quix_note),
                            rows=list(rows.values()))
    if "worker" in rows and "quix" in rows:
        report.ratios.append(Ratio("worker / Quix Streams", "worker", "quix"))
    if "floor" in rows:
        for key in rows:
            if key != "floor":
                report.ratios.append(Ratio(f"{key} / raw floor", key, "floor"))
        if "worker" in rows:
            ratio = rows["worker"].median / rows["floor"].median
            report.targets.append(Target(f"worker ≥ {TARGET_VS_FLOOR}× the raw floor",
                                         ratio >= TARGET_VS_FLOOR, f"{ratio:.2f}×"))
    for key in experiments:
        if "worker" in rows:
            report.ratios.append(Ratio(f"{key} / worker", key, "worker"))
    missed = not all(t.met for t in report.targets)
    if "worker" in rows and (ctx.profile == "always" or (ctx.profile == "auto" and missed)):
        say(f"[{NAME}] profiling one more worker run with py-spy")
        report.sections.append(("Profile of the worker (py-spy)",
                                await _profile(ctx, events_n)))
    report.add_notes()
    return report


async def _profile(ctx: BenchContext, events_n: int) -> str:
    output = ctx.work_dir / NAME / "worker-profile.txt"
    await reset_redis(ctx)
    try:
        result = await _measure(ctx, "worker", "worker-profile", events_n, {}, output)
    except (BenchError, RuntimeError) as exc:
        return f"Profiling failed: {exc}"
    if not output.exists():
        return f"py-spy wrote no output; see {output.with_suffix('.log')}"
    cpu = result.cpu_us_per_event("worker")
    head = (f"One extra worker run (not in the table above) with py-spy attached "
            f"(`--nonblocking`, 250 Hz): {result.rate:,.0f} events/s, worker CPU "
            f"{cpu or float('nan'):.1f} µs/event. Raw folded stacks: `{output}`.")
    return head + "\n\n" + Profile.load(output).markdown(top=25, cpu_us_per_event=cpu)


async def _measure(ctx: BenchContext, key: str, label: str, events_n: int,
                   experiments: dict[str, Experiment], profile_to: Path | None = None) -> Run:
    if key == "floor":
        w = floor(ctx, NAME, label, topic=event_topic("market_data"), stream=FLOOR_STREAM,
                  events=events_n)
        stream = FLOOR_STREAM
    elif key == "quix":
        w = _quix(ctx, label)
        stream = QUIX_STREAM
    else:
        w = worker(ctx, NAME, label, experiment=experiments.get(key), env=WORKER_ENV)
        stream = log_stream("market_data")
    try:
        run, _ = await measure_until_xlen(ctx, w.child, w.mark, stream, events_n, profile_to)
        return run
    finally:
        w.child.stop()


def _quix(ctx: BenchContext, label: str) -> Worker:
    """The Quix app (:mod:`bench.quix_consumer`) in its own venv, a fresh consumer group."""
    directory = run_dir(ctx, NAME, label)
    mark = directory / "mark"
    s = ctx.settings
    variables = child_env(
        s, BENCH_KAFKA_BOOTSTRAP=",".join(s.kafka_bootstrap), BENCH_REDIS_URL=str(s.redis_url),
        BENCH_TOPIC=event_topic("market_data"), BENCH_STREAM=QUIX_STREAM,
        BENCH_GROUP=f"bench-quix-{directory.name}", BENCH_MARK_FILE=str(mark),
        BENCH_QUIX_COMMIT_S=ctx.options.get("quix_commit_s", str(QUIX_COMMIT_S)))
    variables.pop("PYTHONPATH", None)  # its own venv: nothing of ours on its path
    child = Child(f"quix {label}", [ctx.options["quix_python"], str(QUIX_SCRIPT)], variables,
                  directory / "process.log", directory)
    return Worker(child, mark, s)


def _description(events_n: int, ctx: BenchContext, quix_note: str = "") -> str:
    return (
        (__doc__ or "").split("\n\n", 1)[1].strip()
        + (f"\n\n{quix_note}" if quix_note else "")
        + f"\n\nThis run: {events_n:,} messages, {SYMBOLS} symbols, "
        f"{ctx.settings.partitions} partitions, fetch wait {ctx.settings.fetch_wait_ms} ms, "
        f"tables `{ctx.settings.table_store}`; {ctx.runs} rounds. Redis is flushed and its "
        "AOF compacted before every run. CPU columns: CPU seconds each process burned "
        "between the first consumed message and the end, per event (worker = the process "
        "under test; redis and kafka = the embedded servers). Quix checkpoints every "
        f"{ctx.options.get('quix_commit_s', QUIX_COMMIT_S)} s."
    )
