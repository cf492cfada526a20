"""Scenario: ingress → log latency at fixed offered loads, pipeline vs the raw floor.

A paced publisher (this process) sends market-data quotes over 100 symbols at
a fixed rate, one `publish_many` per tick (small envelopes: one per partition
per tick), for a few seconds per load, to:

* **pipeline**: a real `silvertine worker` (default settings: 4 partitions,
  fetch wait 10 ms, Lua sink, Redis AOF `appendfsync always`) → `log:market_data`;
* **raw floor** (`bench/raw_floor.py`): aiokafka (no group, same 10 ms fetch
  wait) → one pipelined XADD per fetch, from a topic of its own. The floor is
  the baseline because it is the least any engine on this stack must pay
  (produce with `acks=all`, the broker's fetch, a durable Redis write): the
  pipeline/floor ratio is what the engine adds at the same load. (The pipeline
  at 1k/s as baseline would only compare the engine with itself.)

Both processes stay up for the whole scenario (each idles while the other is
measured) and the loads are interleaved round by round. Latency per event =
log entry id time − `ts_ns` stamped at the tick's scheduled publish time (see
`bench/load.py`); events not in the log 30 s after the window count as ∞.
*msgs/s* = Kafka messages per second (what the worker pays per-message costs
on); *agent wait* and *log write* are the worker's own
`silvertine_stage_latency_seconds` means per message (`to_agent`: Kafka
append → agent; `to_log`: agent → durable log reply).
"""

from __future__ import annotations

import math
import time

from aiokafka import AIOKafkaProducer

from bench.harness import BenchContext, Worker, floor, free_port, wait_for_mark, worker
from bench.load import (
    QuoteFeed,
    latency_values,
    paced,
    producer,
    read_log,
    send_envelopes,
    stage_means,
    wait_for_length,
)
from bench.profiling import Profile, Sampler
from bench.report import Metric, Ratio, Row, Run, ScenarioReport, Target
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.topics import log_stream

NAME = "latency"
TITLE = "Latency: ingress → log at fixed load (ms), pipeline vs raw floor"
STACK: dict[str, object] = {}

FLOOR_TOPIC = "bench.latency.floor"
FLOOR_STREAM = "bench:latency:floor"
LOG = log_stream("market_data")
LOADS = ((1_000, 5), (10_000, 5), (1_000, 20), (10_000, 20))
"""(events/s, tick ms): the brief's 5 ms ticks, and 20 ms ticks (4× fewer messages)."""
WINDOW_S = 2.5
DRAIN_TIMEOUT_S = 30.0
TARGET_P99_MS = 10.0


class _Target:
    def __init__(self, key: str, process: Worker, stream: str, topic: str | None,
                 metrics_port: int = 0) -> None:
        self.key, self.process, self.stream, self.topic = key, process, stream, topic
        self.metrics_port = metrics_port


async def _phase(ctx: BenchContext, kafka: AIOKafkaProducer, target: _Target, rate: int,
                 tick_ms: int, tag: str, window_s: float) -> Run:
    redis = ctx.redis()
    try:
        feed = QuoteFeed(f"lat-{target.key}-{rate}-{tick_ms}-{tag}")
        length0 = int(await redis.xlen(target.stream))
        stages0 = (await stage_means(target.metrics_port, {}, "market_data"))[1] \
            if target.metrics_port else {}
        cpu0, servers0 = target.process.child.cpu(), ctx.server_cpu()

        async def send(count: int, ts_ns: int) -> int:
            return await send_envelopes(kafka, ctx.settings, feed.next(count, ts_ns),
                                        target.topic)

        offered = await paced(send, rate, tick_ms / 1000, window_s)
        complete = await wait_for_length(redis, target.stream, length0 + offered.events,
                                         DRAIN_TIMEOUT_S)
        cpu1, servers1 = target.process.child.cpu(), ctx.server_cpu()
        target.process.child.check_alive("measuring latency")
        entries = await read_log(redis, target.stream, offered.started_ns // 1_000_000 - 1)
        latencies = [e.latency_ms for e in entries if e.source == feed.source]
        values = latency_values(latencies, offered.events)
        values["msgs_per_s"] = offered.messages / offered.seconds
        if target.metrics_port:
            means, _ = await stage_means(target.metrics_port, stages0, "market_data")
            values["to_agent_ms"], values["to_log_ms"] = means["to_agent_ms"], means["to_log_ms"]
        cpu = {"worker": _delta(cpu0, cpu1)}
        cpu.update({k: _delta(servers0[k], servers1[k]) for k in servers0})
        run = Run(events=offered.events, seconds=offered.seconds, cpu_s=cpu, values=values)
        if not complete:
            run.extra["incomplete"] = f"{len(latencies)}/{offered.events} logged"
        return run
    finally:
        await redis.aclose()


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


async def _warm_up(ctx: BenchContext, kafka: AIOKafkaProducer, target: _Target) -> None:
    """Until the process writes (group joined, partitions assigned), then 1 s of load."""
    feed = QuoteFeed(f"lat-warmup-{target.key}")
    redis = ctx.redis()
    deadline = time.monotonic() + 90
    try:
        while not int(await redis.xlen(target.stream)):
            target.process.child.check_alive("starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target.key} logged nothing within 90 s")
            await send_envelopes(kafka, ctx.settings, feed.next(4), target.topic)
            await wait_for_length(redis, target.stream, 1, 0.2)
        await wait_for_mark(target.process.mark, target.process.child)
    finally:
        await redis.aclose()

    async def send(count: int, ts_ns: int) -> int:
        return await send_envelopes(kafka, ctx.settings, feed.next(count, ts_ns), target.topic)

    await paced(send, 1_000, 0.02, 1.0)


async def run(ctx: BenchContext) -> ScenarioReport:
    """Options: ``window_s`` (seconds per load, default 2.5)."""
    window_s = float(ctx.options.get("window_s", WINDOW_S / (2 if ctx.quick else 1)))
    await ensure_topics(ctx.settings)
    await ensure_topics(ctx.settings, [FLOOR_TOPIC])
    port = free_port()
    targets = [
        _Target("pipeline", worker(ctx, NAME, "pipeline", metrics_port=port), LOG, None, port),
        _Target("floor", floor(ctx, NAME, "floor", topic=FLOOR_TOPIC, stream=FLOOR_STREAM),
                FLOOR_STREAM, FLOOR_TOPIC),
    ]
    rows: dict[str, Row] = {}
    for key, label in (("pipeline", "pipeline (silvertine worker)"),
                       ("floor", "raw floor (aiokafka → XADD)")):
        for rate, tick in LOADS:
            rows[f"{key}@{rate}/{tick}"] = Row(f"{key}@{rate}/{tick}",
                                               f"{label}, {rate:,}/s, {tick} ms ticks")
    kafka = producer(ctx.settings)
    profile_md = ""
    try:
        for target in targets:
            target.process.start()
        await kafka.start()
        for target in targets:
            await _warm_up(ctx, kafka, target)
        ctx.say(f"[{NAME}] both processes writing; {window_s:g} s per load")
        for round_no in range(1, ctx.runs + 1):
            for target in targets:
                for rate, tick in LOADS:
                    key = f"{target.key}@{rate}/{tick}"
                    result = await _phase(ctx, kafka, target, rate, tick, f"r{round_no}",
                                          window_s)
                    rows[key].runs.append(result)
                    v = result.values
                    ctx.say(f"[{NAME}] round {round_no} {key:20s} p50 {v['p50_ms']:8.1f} "
                            f"p99 {v['p99_ms']:8.1f} ms, {v['msgs_per_s']:.0f} msgs/s "
                            f"{result.extra or ''}")
        p99 = rows["pipeline@10000/5"].median_of("p99_ms")
        if ctx.profile == "always" or (ctx.profile == "auto" and not p99 <= TARGET_P99_MS):
            profile_md = await _profile(ctx, kafka, targets[0], window_s)
    finally:
        await kafka.stop()
        for target in targets:
            target.process.child.stop()
    return _report(ctx, rows, window_s, profile_md)


async def _profile(ctx: BenchContext, kafka: AIOKafkaProducer, target: _Target,
                   window_s: float) -> str:
    ctx.say(f"[{NAME}] profiling the worker at 10k/s, 5 ms ticks (py-spy)")
    output = ctx.work_dir / NAME / "pipeline-profile.txt"
    sampler = Sampler(target.process.child.pid, output).start()
    try:
        result = await _phase(ctx, kafka, target, 10_000, 5, "profile", max(window_s, 3.0))
    finally:
        sampler.stop()
    if not output.exists():
        return f"py-spy wrote no output; see {output.with_suffix('.log')}"
    cpu = result.cpu_us_per_event("worker")
    return (f"One extra 10k/s phase (5 ms ticks) with py-spy on the worker: p99 "
            f"{result.values['p99_ms']:.0f} ms, {result.values['msgs_per_s']:.0f} msgs/s, "
            f"worker CPU {cpu or math.nan:.1f} µs/event. Folded stacks: `{output}`.\n\n"
            + Profile.load(output).markdown(top=15, cpu_us_per_event=cpu))


def _report(ctx: BenchContext, rows: dict[str, Row], window_s: float,
            profile_md: str) -> ScenarioReport:
    report = ScenarioReport(
        name=NAME, title=TITLE,
        description=(__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nThis run: {window_s:g} s per load and round, {ctx.runs} rounds, "
        f"{ctx.settings.partitions} partitions, fetch wait {ctx.settings.fetch_wait_ms} ms. "
        "CPU columns: the process under test (worker = pipeline worker or floor) and the "
        "servers, per event, over the window and the drain.",
        rows=list(rows.values()),
        metrics=[Metric("p50_ms", "p50 ms"), Metric("p99_ms", "p99 ms"),
                 Metric("max_ms", "max ms", 0), Metric("msgs_per_s", "msgs/s", 0),
                 Metric("to_agent_ms", "agent wait ms/msg"),
                 Metric("to_log_ms", "log write ms/msg")],
        unit_note="Ratios are pipeline / floor: >1× = the pipeline is slower.",
    )
    for rate, tick in LOADS:
        report.ratios.append(Ratio(f"p99 pipeline / floor, {rate:,}/s, {tick} ms ticks",
                                   f"pipeline@{rate}/{tick}", f"floor@{rate}/{tick}", "p99_ms"))
    for rate, tick in LOADS:
        med = rows[f"pipeline@{rate}/{tick}"].median_of("p99_ms")
        if rate == 10_000:
            report.targets.append(Target(
                f"p99 ≤ {TARGET_P99_MS:g} ms at 10k/s ({tick} ms ticks)",
                med <= TARGET_P99_MS, f"{med:,.1f} ms (median of rounds)"))
    if profile_md:
        report.sections.append(("Profile of the worker at 10k/s (py-spy)", profile_md))
    report.add_notes()
    return report
