"""Scenario: 1 vs 2 workers on 8 partitions; rebalance and failover times.

Topics have 8 partitions here and workers a 6 s session timeout
(`SILVERTINE_SESSION_TIMEOUT_S=6`; rebalance timeout 2 s, the default). Each
round gets a fresh stack (one round's failover cannot leak into the next) and
a backlog of market data (100 symbols, 500-event envelopes), then:

1. **2 workers**, one fresh group, started together, drain the backlog, timed
   as in 2; CPU of both workers per event. *2nd worker late* = how long after
   the first the second consumed its first message. Both are stopped.
2. **1 worker**, a fresh group, drains the backlog: *events/s* = first
   consumed message → `XLEN log:market_data == N`; *steady events/s* and the
   CPU columns = from 10 % to 90 % of N logged (start-up and tail left out).
   It keeps running.
3. **join**: this process publishes quotes at 2k/s in 50 ms ticks to all 8
   partitions (160 messages/s); a 2nd worker joins the group. *Start →
   consuming* = its process start → its first consumed message (interpreter,
   Faust start-up, group join, assignment); *rebalance stall* = the longest
   write gap of any partition from its start until 2 s after it consumed (the
   rebalance's stop-the-world).
4. **failover**: under the same load the 2nd worker gets `kill -9`. Failover =
   kill → every partition writing again (per partition, the end of its
   longest write gap after the kill; the maximum over partitions).
   *Partitions stalled* = how many had a gap > 1 s. Both are then stopped.

Workers run as `silvertine worker` runs them: under the product's supervisor
(which restarts a worker that exits on its own, e.g. to re-read after
out-of-turn offsets); `kill -9` hits the supervisor, and its worker dies with
it. CPU columns are process trees.

A phase that does not complete (join 45 s, failover 30 s) is recorded as ∞ and named.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid

from aiokafka import AIOKafkaProducer

from bench.harness import BenchContext, BenchError, Worker, start_stack, wait_for_mark, worker
from bench.load import Entry, QuoteFeed, paced, producer, read_log, send_envelopes
from bench.measure import reset_redis
from bench.report import Metric, Ratio, Row, Run, ScenarioReport
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.topics import log_stream

NAME = "scale"
TITLE = "Scale-out: 1 vs 2 workers on 8 partitions, rebalance and failover"
STACK = None  # a fresh stack per round (see run): one round's failover must not leak
ROUND_STACK: dict[str, object] = {"partitions": 8, "session_timeout_s": 6.0}

EVENTS = 150_000
JOIN_TIMEOUT_S = 45.0
FAILOVER_TIMEOUT_S = 30.0
PACED_RATE = 2_000.0
PACED_TICK_S = 0.05
"""2k events/s in 50 ms ticks = 160 messages/s over 8 partitions: well under one
worker's per-message ceiling (~600 messages/s, see the latency scenario), so the
times below are the group's, not a saturated survivor's catch-up."""
LOG = log_stream("market_data")


def _delta(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (None if a[k] is None or b.get(k) is None else b[k] - a[k])  # type: ignore[operator]
            for k in a}


async def _drain(ctx: BenchContext, workers: list[Worker], n: int) -> Run:
    """Start ``workers`` (one group, fresh), time them draining the backlog; they are
    left running. ``rate`` = first message of any → ``XLEN == n``; ``steady`` and its
    CPU = from 10 % to 90 % of the backlog logged (start-up and tail left out)."""
    await reset_redis(ctx)
    redis = ctx.redis()
    try:
        for w in workers:
            w.start()
        marks = await asyncio.gather(*(_mark_or_nan(w) for w in workers))
        first = min(m for m in marks if math.isfinite(m))
        points: dict[float, tuple[float, dict[str, float | None]]] = {}
        deadline = time.monotonic() + max(60.0, n / 2_000)
        while True:
            length = int(await redis.xlen(LOG))
            for fraction in (0.1, 0.9, 1.0):
                if length >= fraction * n and fraction not in points:
                    points[fraction] = (time.time(), {w.child.name: w.child.cpu()
                                                      for w in workers} | ctx.server_cpu())
            if length >= n:
                break
            for w in workers:
                w.child.check_alive("draining the backlog")
            if time.monotonic() > deadline:
                raise BenchError(f"{LOG} held {length:,}/{n:,} after the deadline")
            await asyncio.sleep(0.005)
    except BaseException:
        _stop(workers)
        raise
    finally:
        await redis.aclose()
    (t10, cpu10), (t90, cpu90), (finished, _) = points[0.1], points[0.9], points[1.0]
    cpu = _delta(cpu10, cpu90)
    workers_cpu = [cpu.pop(w.child.name) for w in workers]
    cpu["worker"] = None if None in workers_cpu else sum(workers_cpu)  # type: ignore[arg-type]
    steady = Run(events=int(0.8 * n), seconds=t90 - t10, cpu_s=cpu)
    run = Run(events=n, seconds=finished - first, cpu_s=cpu, ended_at=finished)
    run.cpu_s = {k: (None if v is None else v * n / steady.events) for k, v in cpu.items()}
    run.values["steady"] = steady.rate
    run.values["worker_cpu_us"] = steady.cpu_us_per_event("worker") or math.nan
    if len(workers) > 1:
        run.values["second_late_s"] = max(marks) - first
    return run


def _stop(workers: list[Worker]) -> None:
    for w in workers:
        w.child.stop(timeout_s=8.0)


async def _mark_or_nan(w: Worker, timeout_s: float = 30.0) -> float:
    """The worker's first-message time; NaN if it consumed nothing within ``timeout_s``."""
    try:
        return await wait_for_mark(w.mark, w.child, timeout_s=timeout_s)
    except BenchError:
        w.child.check_alive("starting")  # a dead worker is an error, not a slow join
        return math.nan


def _gaps(entries: list[Entry], since_ms: float, until_ms: float
          ) -> dict[int, tuple[float, float]]:
    """Per partition: (longest write gap in [since, until], when it ended), in ms; a
    partition still silent at ``until_ms`` has a gap ending there."""
    by_partition: dict[int, list[float]] = {}
    for entry in entries:
        if since_ms <= entry.ms <= until_ms:
            by_partition.setdefault(entry.partition, []).append(entry.ms)
    out = {}
    for partition, times in by_partition.items():
        points = [since_ms, *sorted(times), until_ms]
        out[partition] = max((b - a, b) for a, b in zip(points, points[1:], strict=False))
    return out


class _Load:
    """Quotes at 2k/s, 50 ms ticks, to every partition, in the background."""

    def __init__(self, ctx: BenchContext, tag: str) -> None:
        self.ctx, self.feed = ctx, QuoteFeed(f"scale-paced-{tag}")
        self.kafka: AIOKafkaProducer = producer(ctx.settings)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Load:
        await self.kafka.start()

        async def send(count: int, ts_ns: int) -> int:
            return await send_envelopes(self.kafka, self.ctx.settings,
                                        self.feed.next(count, ts_ns))

        async def produce() -> None:
            while not self.stop.is_set():
                await paced(send, PACED_RATE, PACED_TICK_S, 1.0)

        self.task = asyncio.create_task(produce())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self.task is not None:
            await self.task
        await self.kafka.stop()

    async def entries(self, since_ms: float) -> list[Entry]:
        redis = self.ctx.redis()
        try:
            return [e for e in await read_log(redis, LOG, int(since_ms))
                    if e.source == self.feed.source]
        finally:
            await redis.aclose()


async def _join(ctx: BenchContext, load: _Load, first: Worker, tag: str) -> tuple[Run, Worker]:
    """A 2nd worker joins ``first``'s group under load."""
    second = worker(ctx, NAME, f"join-{tag}", app_id=first.settings.app_id).start()
    consuming = await _mark_or_nan(second, timeout_s=JOIN_TIMEOUT_S)
    if not math.isfinite(consuming):  # the group never handed it partitions
        return Run(events=0, seconds=0.0, values={"join_start_s": math.inf,
                                                   "stall_s": math.inf},
                   extra={"stuck": f"no partition within {JOIN_TIMEOUT_S:g} s"}), second
    await asyncio.sleep(2.0)
    until = (consuming + 2.0) * 1000
    gaps = _gaps(await load.entries(second.started_at * 1000), second.started_at * 1000, until)
    return Run(events=0, seconds=0.0, values={
        "join_start_s": consuming - second.started_at,
        "stall_s": max((gap for gap, _ in gaps.values()), default=math.nan) / 1000}), second


async def _failover(ctx: BenchContext, load: _Load, survivor: Worker, victim: Worker) -> Run:
    """``kill -9`` of ``victim``: kill → every partition writing again."""
    partitions = ctx.settings.partitions
    await asyncio.sleep(1.0)
    killed_ms = time.time() * 1000
    victim.child.kill()
    deadline = time.monotonic() + FAILOVER_TIMEOUT_S
    while True:
        await asyncio.sleep(0.5)
        now_ms = time.time() * 1000
        entries = await load.entries(killed_ms - 200)
        # Resumed: every partition wrote in the last 0.5 s (and not just in-flight
        # writes of the victim right at the kill).
        recent = {e.partition for e in entries if e.ms > max(now_ms - 500, killed_ms + 300)}
        if len(recent) == partitions:
            break
        survivor.child.check_alive("taking over")
        if time.monotonic() > deadline:
            return Run(events=0, seconds=0.0, values={"failover_s": math.inf},
                       extra={"stuck": f"not every partition resumed within "
                                       f"{FAILOVER_TIMEOUT_S:g} s"})
    gaps = _gaps(entries, killed_ms, now_ms)
    return Run(events=0, seconds=0.0, values={
        "failover_s": (max(end for _, end in gaps.values()) - killed_ms) / 1000,
        "stalled": float(sum(1 for gap, _ in gaps.values() if gap > 1000))})


async def run(ctx: BenchContext) -> ScenarioReport:
    """Options: ``events`` (backlog, default 150,000)."""
    n = int(ctx.options.get("events", EVENTS // (10 if ctx.quick else 1)))
    rows = {
        "one": Row("one", "1 worker, 8 partitions"),
        "two": Row("two", "2 workers (one group, started together), 8 partitions"),
        "join": Row("join", "join: a 2nd worker joins a running one, under 2k/s"),
        "failover": Row("failover", "failover: then `kill -9` of the 2nd, under 2k/s"),
    }
    for round_no in range(1, ctx.runs + 1):
        tag = f"r{round_no}"
        stack, settings, pids = await asyncio.to_thread(
            start_stack, ctx.work_dir / NAME / f"round-{round_no}", **ROUND_STACK)
        try:
            one, two, join, failover = await _round(
                dataclasses.replace(ctx, settings=settings, server_pids=pids), n, tag)
        finally:
            await asyncio.to_thread(stack.down)
        for key, result in (("one", one), ("two", two), ("join", join),
                            ("failover", failover)):
            rows[key].runs.append(result)

        def get(run: Run, key: str) -> float:
            return run.values.get(key, math.nan)

        ctx.say(f"[{NAME}] round {round_no}: 2 workers {get(two, 'steady'):,.0f}/s steady "
                f"({get(two, 'worker_cpu_us'):.1f} µs/event, 2nd late "
                f"{get(two, 'second_late_s'):.1f} s), 1 worker {get(one, 'steady'):,.0f}/s "
                f"steady ({get(one, 'worker_cpu_us'):.1f} µs/event); join: consuming after "
                f"{get(join, 'join_start_s'):.1f} s, stall {get(join, 'stall_s'):.2f} s; "
                f"failover {get(failover, 'failover_s'):.1f} s "
                f"({get(failover, 'stalled'):.0f} partitions stalled) "
                f"{two.extra or ''}{one.extra or ''}{join.extra or ''}{failover.extra or ''}")
    report = ScenarioReport(
        name=NAME, title=TITLE,
        description=(__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nThis run: backlog {n:,} events, {ctx.runs} rounds. CPU columns (throughput "
        "rows, steady window): worker = both workers together.",
        rows=list(rows.values()),
        metrics=[Metric("rate", "events/s", 0), Metric("steady", "steady events/s", 0),
                 Metric("worker_cpu_us", "worker CPU µs/event (steady)"),
                 Metric("second_late_s", "2nd worker late s"),
                 Metric("failover_s", "failover s"), Metric("stalled", "partitions stalled", 0),
                 Metric("join_start_s", "start → consuming s"),
                 Metric("stall_s", "rebalance stall s", 2)],
        cpu_processes=("redis", "kafka"),
        unit_note="Ratios: 2 workers / 1 worker. ∞ = did not complete (join 45 s, failover 30 s).",
    )
    report.ratios += [Ratio("throughput, 2 workers / 1", "two", "one"),
                      Ratio("steady throughput, 2 workers / 1", "two", "one", "steady"),
                      Ratio("worker CPU per event, 2 workers / 1", "two", "one", "worker_cpu_us")]
    report.add_notes()
    return report


async def _round(ctx: BenchContext, n: int, tag: str) -> tuple[Run, Run, Run, Run]:
    """One round on its own stack: the backlog, then the four phases."""
    await ensure_topics(ctx.settings)
    kafka = producer(ctx.settings)
    await kafka.start()
    try:
        feed = QuoteFeed("scale-feed")
        while feed.sent < n:
            await send_envelopes(kafka, ctx.settings, feed.next(min(20_000, n - feed.sent)))
    finally:
        await kafka.stop()
    group = f"bench-two-{tag}-{uuid.uuid4().hex[:6]}"
    pair = [worker(ctx, NAME, f"two{i}-{tag}", app_id=group) for i in (1, 2)]
    try:
        two = await _drain(ctx, pair, n)
    except BenchError as exc:  # recorded, not fatal: the other phases still run
        two = Run(0, 0.0, extra={"failed": str(exc).splitlines()[0]})
    finally:
        _stop(pair)
    first = worker(ctx, NAME, f"one-{tag}")
    started = [first]
    join = failover = Run(0, 0.0)
    try:
        one = await _drain(ctx, [first], n)
        async with _Load(ctx, tag) as load:
            join, second = await _join(ctx, load, first, tag)
            started.append(second)
            failover = (await _failover(ctx, load, first, second)
                        if "stuck" not in join.extra else Run(0, 0.0))
    except BenchError as exc:
        one = Run(0, 0.0, extra={"failed": str(exc).splitlines()[0]})
    finally:
        _stop(started)
    return one, two, join, failover
