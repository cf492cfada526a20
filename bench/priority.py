"""Scenario: order latency with and without a market-data flood, lanes on vs off.

A backlog of market data (500-event envelopes, 100 symbols) is produced once,
before any worker runs. Each run starts a fresh worker group on it, so the
worker is flooded from its first message: it drains the backlog as fast as it
can (the flood). Meanwhile this process publishes single orders
(`Publisher.publish`, one event per Kafka message, 8 symbols) at a fixed rate;
when the backlog is logged the orders go on for a few seconds without flood.

* **lanes on**: the product's defaults (orders critical, market data normal):
  before each market-data message the agent steps aside while an order is
  queued or in flight (`silvertine_streams/agents/lanes.py`).
* **lanes off**: `SILVERTINE_LANES=market_data=critical`, so market data never
  yields (the baseline, same run, interleaved round by round).
* **critical group**: two workers, the product's split deployment: one with
  `SILVERTINE_EVENT_TYPES=order,fill` in a group of its own (its own app id),
  one with the other types. Orders then share no process, consumer, GIL or
  event loop with the flood, only the machine and the servers.
* **raw floor for orders** (the baseline): the same market-data worker, and
  `bench/raw_floor.py` (aiokafka, no group → pipelined XADD, no checks) on
  `silvertine.order`: the least any consumer pays for an order on this stack
  under this flood (same broker, Redis and cores).

Orders start one second after the flood's first message: the moments before
are a worker group starting up (joins, first fetches), which the scale scenario
measures, not a flood. Order latency = `log:order` entry id time − the order's
`ts_ns` (its scheduled publish time), as in the latency scenario. Each run's group starts at the end
of `silvertine.order` (`rewind_group(..., "latest", ["order"])`), so earlier
runs' orders are not replayed into it. *Flood events/s* = backlog size /
(last market-data event logged − first message consumed). *agent wait* / *log
write*: the worker's own `silvertine_stage_latency_seconds` means for orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from redis.asyncio import Redis

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
from bench.measure import reset_redis
from bench.profiling import Profile, Sampler
from bench.report import Metric, Ratio, Row, Run, ScenarioReport, Target
from silvertine_streams.events import OrderEvent, OrderSide
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.ops.rewind import rewind_group
from silvertine_streams.topics import event_topic, log_stream

NAME = "priority"
TITLE = ("Priority: order latency under a market-data flood (ms), lanes on vs off vs a "
         "critical worker group")
STACK: dict[str, object] = {}

FLOOD_EVENTS = 300_000
ORDER_RATE = 50.0
ORDER_SYMBOLS = [f"ORD{i}" for i in range(8)]
CALM_S = 4.0
FLOOD_WARMUP_S = 1.0
TARGET_P99_MS = 20.0
VARIANTS = {
    "lanes": ("lanes on (defaults)", {}),
    "lanes_off": ("lanes off (`SILVERTINE_LANES=market_data=critical`)",
                  {"SILVERTINE_LANES": "market_data=critical"}),
    "split": ("critical group (`SILVERTINE_EVENT_TYPES=order,fill` in its own worker)", {}),
    "floor": ("raw floor for orders (aiokafka → XADD) beside a market-data worker", {}),
}
BULK_TYPES, CRITICAL_TYPES = "market_data,signal,system", "order,fill"
MD_LOG, ORDER_LOG = log_stream("market_data"), log_stream("order")


class _Orders:
    """Orders of one source, sequences 1.. per symbol, ``ts_ns`` = scheduled time."""

    def __init__(self, source: str) -> None:
        self.source, self.sent = source, 0

    def next(self, count: int, ts_ns: int) -> list[OrderEvent]:
        orders = []
        for i in range(self.sent, self.sent + count):
            orders.append(OrderEvent(
                order_id=f"{self.source}-{i}", symbol=ORDER_SYMBOLS[i % len(ORDER_SYMBOLS)],
                side=OrderSide.BUY, quantity=1.0, source=self.source,
                sequence=i // len(ORDER_SYMBOLS) + 1, ts_ns=ts_ns))
        self.sent += count
        return orders


async def _one_run(ctx: BenchContext, variant: str, tag: str, flood_n: int, calm_s: float,
                   warmup_s: float, sampler_to: str | None = None) -> tuple[Run, Run]:
    """One worker on the flood: (orders under flood, orders after it)."""
    await reset_redis(ctx)
    port = free_port()
    experiment = next((e for e in ctx.experiments if f"exp:{e.name}" == variant), None)
    label = f"{variant.replace(':', '-')}-{tag}"
    split = variant in ("split", "floor")  # orders are not w's: another process takes them
    w: Worker = worker(ctx, NAME, label, metrics_port=0 if split else port,
                       experiment=experiment, env=VARIANTS.get(variant, ("", {}))[1],
                       **({"event_types": BULK_TYPES} if split else {}))
    order_worker = w
    if variant == "split":
        order_worker = worker(ctx, NAME, f"{label}-critical", metrics_port=port,
                              app_id=f"{w.settings.app_id}-critical",
                              env=_pairs(ctx.options.get("critical_env", "")),
                              event_types=CRITICAL_TYPES)
    elif variant == "floor":
        order_worker = floor(ctx, NAME, f"{label}-floor", topic=event_topic("order"),
                             stream=ORDER_LOG)
    stage_port = None if variant == "floor" else port  # the floor has no metrics
    redis = ctx.redis()
    publisher = Publisher(ctx.settings.model_copy(
        update={"publish_max_lag": 0, "publish_max_backlog": 0}))
    sampler = None
    try:
        # Earlier runs' orders stay in `silvertine.order`: start this group after them
        # (the product's rewind), so only this run's orders are in its figures.
        if variant != "floor":  # the floor has no group: it reads from the beginning
            await rewind_group(order_worker.settings, "latest", ["order"])
        if split:
            # The critical worker first: measure orders only once it consumes them.
            order_worker.start()
            await publisher.publish(_Orders(f"warm-up-{label}").next(1, time.time_ns())[0])
            await wait_for_mark(order_worker.mark, order_worker.child)
        w.start()
        flood_started = await wait_for_mark(w.mark, w.child)
        if sampler_to:
            sampler = Sampler(w.child.pid, ctx.work_dir / NAME / sampler_to).start()
        cpu0, servers0 = _cpu(w, order_worker), ctx.server_cpu()
        flood_done = asyncio.Event()
        flood_end = [math.nan]

        async def watch_flood() -> None:
            await wait_for_length(redis, MD_LOG, flood_n, max(120.0, flood_n / 2_000))
            flood_end[0] = time.time()
            flood_done.set()

        watcher = asyncio.create_task(watch_flood())
        stages0 = (await _stage_means(stage_port, {}))[1]
        flood_orders = _Orders(f"orders-{variant}-{tag}-flood")

        async def send_flood(count: int, ts_ns: int) -> int:
            for order in flood_orders.next(count, ts_ns):
                await publisher.publish(order)
            return count

        # The flood's first moments are the group starting up (joins, first fetches),
        # which the scale scenario measures; orders go out once the flood runs.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(flood_done.wait(),
                                   max(0.0, flood_started + warmup_s - time.time()))
        # Orders while the backlog drains, in slices so they stop with the flood.
        while not flood_done.is_set():
            await paced(send_flood, ORDER_RATE, 1 / ORDER_RATE, 0.5)
            w.child.check_alive("draining the flood")
            order_worker.child.check_alive("taking orders under the flood")
            if watcher.done() and not math.isfinite(flood_end[0]):
                break
        await watcher
        cpu1, servers1 = _cpu(w, order_worker), ctx.server_cpu()
        if sampler is not None:
            sampler.stop()
        flood_stages, stages1 = await _stage_means(stage_port, stages0)
        calm_orders = _Orders(f"orders-{variant}-{tag}-calm")

        async def send_calm(count: int, ts_ns: int) -> int:
            for order in calm_orders.next(count, ts_ns):
                await publisher.publish(order)
            return count

        calm = await paced(send_calm, ORDER_RATE, 1 / ORDER_RATE, calm_s)
        entries = await _orders_logged(redis, (flood_orders, calm_orders),
                                       int(flood_started * 1000) - 1000)
        calm_stages, _ = await _stage_means(stage_port, stages1)
        flood_s = flood_end[0] - flood_started
        under = Run(events=flood_orders.sent, seconds=flood_s, values={
            **_latencies(entries, flood_orders), "flood_rate": flood_n / flood_s,
            "to_agent_ms": flood_stages["to_agent_ms"], "to_log_ms": flood_stages["to_log_ms"]})
        under.cpu_s = {"worker": _delta(cpu0, cpu1),
                       **{k: _delta(servers0[k], servers1[k]) for k in servers0}}
        # CPU per *market-data* event during the flood (the orders are ~0.1% of it).
        under.events = flood_n
        calm_run = Run(events=calm_orders.sent, seconds=calm.seconds, values={
            **_latencies(entries, calm_orders),
            "to_agent_ms": calm_stages["to_agent_ms"], "to_log_ms": calm_stages["to_log_ms"]})
        return under, calm_run
    finally:
        if sampler is not None:
            sampler.stop()
        await publisher.close()
        await redis.aclose()
        w.child.stop()
        if split:
            order_worker.child.stop()


def _pairs(spec: str) -> dict[str, str]:
    """``K=V;K=V`` (the ``critical_env`` option) as a dict."""
    return dict(pair.split("=", 1) for pair in spec.split(";") if pair)


async def _stage_means(port: int | None, before: dict[str, float]
                       ) -> tuple[dict[str, float], dict[str, float]]:
    if port is None:
        return {"to_agent_ms": math.nan, "to_log_ms": math.nan}, {}
    return await stage_means(port, before, "order")


def _cpu(*workers: Worker) -> float | None:
    """CPU seconds of the distinct worker processes (both groups in the split variant)."""
    total = 0.0
    for w in {id(w): w for w in workers}.values():
        used = w.child.cpu()
        if used is None:
            return None
        total += used
    return total


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _latencies(entries: dict[str, list[float]], orders: _Orders) -> dict[str, float]:
    values = latency_values(entries.get(orders.source, []), orders.sent)
    values["orders"] = float(orders.sent)
    return values


async def _orders_logged(redis: Redis, sources: tuple[_Orders, ...], since_ms: int
                         ) -> dict[str, list[float]]:
    """Wait (≤ 30 s) for this run's orders in ``log:order``; latencies by source."""
    deadline = time.monotonic() + 30
    while True:
        by_source: dict[str, list[float]] = {o.source: [] for o in sources}
        for entry in await read_log(redis, ORDER_LOG, since_ms):
            if entry.source in by_source:
                by_source[entry.source].append(entry.latency_ms)
        logged = sum(len(v) for v in by_source.values())
        if logged >= sum(o.sent for o in sources) or time.monotonic() > deadline:
            return by_source
        await asyncio.sleep(0.2)


async def run(ctx: BenchContext) -> ScenarioReport:
    """Options: ``flood`` (market-data events in the backlog, default 300,000),
    ``critical_env`` (``K=V;K=V``: more variables for the critical group's worker),
    ``variants`` (comma list of lanes, lanes_off, split, floor; default all)."""
    flood_n = int(ctx.options.get("flood", FLOOD_EVENTS // (10 if ctx.quick else 1)))
    calm_s = CALM_S / (2 if ctx.quick else 1)
    warmup_s = FLOOD_WARMUP_S * (0.3 if ctx.quick else 1)
    await ensure_topics(ctx.settings)
    ctx.say(f"[{NAME}] producing a backlog of {flood_n:,} market-data events")
    kafka = producer(ctx.settings)
    await kafka.start()
    try:
        feed = QuoteFeed("flood")
        for _ in range(0, flood_n, 20_000):
            await send_envelopes(kafka, ctx.settings, feed.next(min(20_000, flood_n - feed.sent)))
    finally:
        await kafka.stop()
    rows: dict[str, Row] = {}
    chosen = [v for v in ctx.options.get("variants", ",".join(VARIANTS)).split(",") if v]
    labels = {key: label for key, (label, _) in VARIANTS.items() if key in chosen}
    for e in ctx.experiments:  # e.g. --experiment fetch64k=.,SILVERTINE_FAUST_...=65536
        labels[f"exp:{e.name}"] = (f"experiment **{e.name}** (lanes on"
                                   + "".join(f", {k}={v}" for k, v in e.env) + ")")
    for key, label in labels.items():
        rows[f"{key}:flood"] = Row(f"{key}:flood", f"{label}: orders **under flood**")
        rows[f"{key}:calm"] = Row(f"{key}:calm", f"{label}: orders, no flood")
    for round_no in range(1, ctx.runs + 1):
        for key in labels:
            under, calm = await _one_run(ctx, key, f"r{round_no}", flood_n, calm_s, warmup_s)
            rows[f"{key}:flood"].runs.append(under)
            rows[f"{key}:calm"].runs.append(calm)
            ctx.say(f"[{NAME}] round {round_no} {key:9s} orders under flood p50 "
                    f"{under.values['p50_ms']:.1f} p99 {under.values['p99_ms']:.1f} ms "
                    f"(n={under.values['orders']:.0f}, flood {under.values['flood_rate']:,.0f} "
                    f"events/s); calm p50 {calm.values['p50_ms']:.1f} p99 "
                    f"{calm.values['p99_ms']:.1f} ms")
    report = ScenarioReport(
        name=NAME, title=TITLE,
        description=(__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nThis run: backlog {flood_n:,} events, orders at {ORDER_RATE:g}/s, "
        f"{calm_s:g} s without flood after it, {ctx.runs} rounds; lane max pause "
        f"{ctx.settings.lane_max_pause_s * 1000:g} ms. CPU columns (flood rows): per "
        "market-data event during the flood.",
        rows=list(rows.values()),
        metrics=[Metric("p50_ms", "order p50 ms"), Metric("p99_ms", "order p99 ms"),
                 Metric("max_ms", "order max ms", 0), Metric("orders", "orders", 0),
                 Metric("to_agent_ms", "agent wait ms/order"),
                 Metric("to_log_ms", "log write ms/order"),
                 Metric("flood_rate", "flood events/s", 0)],
        unit_note=("Ratios: lanes off / lanes on (>1× = the lanes help), flood / calm, lanes on / "
                   "critical group (>1× = the split helps)."),
    )
    report.ratios += [
        Ratio("order p99 under flood: lanes off / lanes on", "lanes_off:flood", "lanes:flood",
              "p99_ms"),
        Ratio("order p50 under flood: lanes off / lanes on", "lanes_off:flood", "lanes:flood",
              "p50_ms"),
        Ratio("flood throughput: lanes on / lanes off", "lanes:flood", "lanes_off:flood",
              "flood_rate"),
        Ratio("lanes on: order p99 under flood / no flood", "lanes:flood", "lanes:calm",
              "p99_ms"),
        Ratio("order p99 under flood: lanes on / critical group", "lanes:flood",
              "split:flood", "p99_ms"),
        Ratio("flood throughput: critical group / lanes on", "split:flood", "lanes:flood",
              "flood_rate"),
        Ratio("order p99 under flood: critical group / raw floor", "split:flood", "floor:flood",
              "p99_ms"),
        Ratio("order p50 under flood: critical group / raw floor", "split:flood", "floor:flood",
              "p50_ms"),
    ]
    for key in labels:
        if key.startswith("exp:"):
            report.ratios.append(Ratio(f"order p99 under flood: {key} / lanes on",
                                       f"{key}:flood", "lanes:flood", "p99_ms"))
    # With -o variants=..., keep what the chosen rows can show.
    report.ratios = [r for r in report.ratios
                     if r.numerator in rows and r.denominator in rows]
    p99 = math.nan
    for key, where in (("lanes", "lanes on"), ("split", "critical group")):
        if f"{key}:flood" in rows:
            p99 = rows[f"{key}:flood"].median_of("p99_ms")
            report.targets.append(Target(
                f"orders p99 ≤ {TARGET_P99_MS:g} ms under flood ({where})",
                p99 <= TARGET_P99_MS, f"{p99:,.1f} ms (median of rounds)"))
    if ctx.profile == "always" or (ctx.profile == "auto" and not p99 <= TARGET_P99_MS):
        report.sections.append(("Profile of the worker under flood with orders (py-spy)",
                                await _profile(ctx, flood_n)))
    report.add_notes()
    return report


async def _profile(ctx: BenchContext, flood_n: int) -> str:
    ctx.say(f"[{NAME}] profiling one more lanes-on run (py-spy, flood part)")
    name = "lanes-profile.txt"
    under, _ = await _one_run(ctx, "lanes", "profile", flood_n, 0.5, FLOOD_WARMUP_S,
                              sampler_to=name)
    output = ctx.work_dir / NAME / name
    if not output.exists():
        return f"py-spy wrote no output; see {output.with_suffix('.log')}"
    cpu = under.cpu_us_per_event("worker")
    return (f"One extra lanes-on run with py-spy attached during the flood: orders p99 "
            f"{under.values['p99_ms']:.0f} ms, flood {under.values['flood_rate']:,.0f} "
            f"events/s, worker CPU {cpu or math.nan:.1f} µs per market-data event. Folded "
            f"stacks: `{output}`.\n\n" + Profile.load(output).markdown(top=15,
                                                                       cpu_us_per_event=cpu))
