"""Soak: memory of the worker, Redis and the broker under steady load (issue #14).

``make soak`` / ``python -m bench.soak --minutes 20``: a fresh embedded stack
(Tansu + redis-server, as the bench starts it), one ``silvertine worker`` with
handlers (``bench.handler_load:setup_soak``: a tick handler on market data and a
counter on every produced type, so the handler group follows each type's log),
and this process publishing at a fixed rate through the product's ``Publisher``:

* market data (85 %) and signals (5 %) as batch envelopes (``publish_many``),
* orders (5 %) and fills of those orders (5 %) as single-event messages
  (``publish``, one Kafka message each, sent concurrently within a tick),

in 100 ms ticks, so the whole pipeline runs: Kafka, decode and validation,
sequencing, the idempotent Lua log write, the sequence table, the handler group.
Every few seconds it samples the RSS (``VmRSS``) of the worker's process tree (the
supervisor and its worker), of redis-server and of the broker, and Redis's
``used_memory``. After a warm-up (a fraction of the run) it fits a least-squares
line to each series and reports its slope in MB/min (and per event published:
*bytes/event* = slope / events per minute).

**Verdict threshold: 0.1 MB/min.** At 2,000 events/s that is < 1 byte per event
(0.1 MB / 120,000 events), so anything that keeps even a small record per event
(an id in a set: 50–100 bytes) shows as 50× the threshold or more; and it is
6 MB per hour, 144 MB per day: memory that a week-long run could carry. Below it
a series is *flat*, above it *growing*; the slope's standard error is shown so a
noisy series is not mistaken for either.

Settings reach the stack and the worker through the environment: ``--env
SILVERTINE_X=...`` (or ``SILVERTINE_*`` exported before ``make soak``) is read
by the settings the stack and the worker are built from, e.g. log retention or
the embedded broker's bound once those settings exist. An unknown
``SILVERTINE_*`` name stops the soak at once (the product's settings refuse it).

The section it writes into ``bench/RESULTS.md`` sits between ``<!-- soak:begin
-->`` and ``<!-- soak:end -->``; ``python -m bench`` keeps that block when it
rewrites the file. ``--from-samples <work dir>/soak-samples.json`` renders the
section again from a finished run's samples with the current
``bench/notes/soak.md`` (no new measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from redis.exceptions import ResponseError

from bench.harness import (
    BenchContext,
    Worker,
    cpu_seconds,
    free_port,
    start_stack,
    tree_cpu_seconds,
    worker,
)
from bench.load import QuoteFeed, paced
from bench.report import SOAK_BEGIN, SOAK_END, machine_facts
from silvertine_streams.events import (
    Event,
    FillEvent,
    OrderEvent,
    OrderSide,
    SignalEvent,
    SignalType,
)
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.topics import DLQ_STREAM, handler_progress, log_stream

NAME = "soak"
RESULTS = Path(__file__).with_name("RESULTS.md")
NOTES = Path(__file__).with_name("notes") / "soak.md"
BEGIN, END = SOAK_BEGIN, SOAK_END
HANDLERS = "bench.handler_load:setup_soak"
TYPES = ("market_data", "signal", "order", "fill")
TICK_S = 0.1
FLAT_MB_PER_MIN = 0.1
SERIES = {
    "worker_rss": "worker RSS (supervisor + worker)",
    "redis_rss": "redis-server RSS",
    "redis_used": "Redis `used_memory`",
    "kafka_rss": "broker (Tansu) RSS",
}


@dataclass
class Sample:
    """One sample: seconds since the load started, memory in MB, counts so far."""

    t_s: float
    worker_rss: float
    redis_rss: float
    redis_used: float
    kafka_rss: float
    produced: int
    logged: int
    handled: int
    dlq: int
    worker_cpu: float = math.nan
    """CPU seconds so far (worker tree, redis-server, broker): who is busy, who waits."""
    redis_cpu: float = math.nan
    kafka_cpu: float = math.nan


@dataclass
class SoakRun:
    """A soak's parameters, facts and samples (``soak-samples.json``)."""

    minutes: float
    rate: float
    warmup_fraction: float
    sample_s: float
    env: dict[str, str]
    facts: dict[str, str]
    samples: list[Sample] = field(default_factory=list)
    produced: int = 0
    drained: bool = False
    note: str = ""
    redis_keys: dict[str, float] = field(default_factory=dict)
    """MB per Redis key family (``MEMORY USAGE``) at the end: what Redis holds."""


# --- measuring -----------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """``VmRSS`` of ``pid`` in MB (10⁶ bytes), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError):
        return None
    return 0.0  # a zombie has no VmRSS line


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_rss_mb(pid: int) -> float:
    return sum(rss_mb(p) or 0.0 for p in tree_pids(pid))


class _Mix:
    """Events of the soak's mix, valid and in sequence per (source, symbol)."""

    def __init__(self, tag: str, symbols: int = 100) -> None:
        self.quotes = QuoteFeed(f"soak-md-{tag}", symbols)
        self.symbols = self.quotes.names
        self.tag = tag
        self.signals = self.orders = self.fills = 0

    def next(self, count: int, ts_ns: int) -> tuple[list[Event], list[Event]]:
        """(envelope events, single events) for ``count`` events: 85/5/5/5 %."""
        each = count // 20
        rest = count - 3 * each
        batch: list[Event] = list(self.quotes.next(rest, ts_ns))
        names, n = self.symbols, len(self.symbols)
        for i in range(self.signals, self.signals + each):
            batch.append(SignalEvent(
                symbol=names[i % n], signal_type=SignalType.LONG if i % 2 else SignalType.SHORT,
                strength=0.5, strategy_id="soak", source=f"soak-sig-{self.tag}",
                sequence=i // n + 1, ts_ns=ts_ns))
        self.signals += each
        singles: list[Event] = []
        for i in range(self.orders, self.orders + each):
            singles.append(OrderEvent(
                order_id=f"soak-{self.tag}-{i}", symbol=names[i % n], side=OrderSide.BUY,
                quantity=1.0, source=f"soak-ord-{self.tag}", sequence=i // n + 1, ts_ns=ts_ns))
        self.orders += each
        for i in range(self.fills, self.fills + each):
            singles.append(FillEvent(
                order_id=f"soak-{self.tag}-{i}", symbol=names[i % n], executed_quantity=1.0,
                executed_price=100.0, trade_id=f"soak-{self.tag}-t{i}",
                source=f"soak-fill-{self.tag}", sequence=i // n + 1, ts_ns=ts_ns))
        self.fills += each
        return batch, singles


async def _counts(ctx: BenchContext, app_id: str) -> tuple[int, int, int]:
    """(entries ever logged over the soak's types, of them handled, DLQ entries).

    Counted so that retention does not hide them: a log's ``entries-added``
    (XINFO) counts every entry ever appended, and the handler group's lag
    (``XLEN`` minus its finished count, which a trim lowers with the log) is
    what it has not handled yet.
    """
    redis = ctx.redis()
    try:
        logged = handled = 0
        acked = await redis.hgetall(handler_progress(app_id))
        for kind in TYPES:
            try:
                info = await redis.xinfo_stream(log_stream(kind))
            except ResponseError:  # no such stream yet
                continue
            added, length = int(info["entries-added"]), int(info["length"])
            logged += added
            handled += added - max(0, length - int(acked.get(kind.encode(), 0)))
        return logged, handled, int(await redis.xlen(DLQ_STREAM))
    finally:
        await redis.aclose()


async def _sample(ctx: BenchContext, w: Worker, t0: float, produced: int) -> Sample:
    redis = ctx.redis()
    try:
        info = await redis.info("memory")
    finally:
        await redis.aclose()
    logged, handled, dlq = await _counts(ctx, w.settings.app_id)
    return Sample(
        t_s=time.monotonic() - t0, worker_rss=tree_rss_mb(w.child.pid),
        redis_rss=rss_mb(ctx.server_pids["redis"]) or math.nan,
        redis_used=int(info["used_memory"]) / 1e6,
        kafka_rss=rss_mb(ctx.server_pids["kafka"]) or math.nan,
        produced=produced, logged=logged, handled=handled, dlq=dlq,
        worker_cpu=tree_cpu_seconds(w.child.pid) or math.nan,
        redis_cpu=cpu_seconds(ctx.server_pids["redis"]) or math.nan,
        kafka_cpu=cpu_seconds(ctx.server_pids["kafka"]) or math.nan)


async def soak(ctx: BenchContext, run: SoakRun) -> None:
    """Start the worker, publish at ``run.rate`` for ``run.minutes``, sample throughout."""
    say = ctx.say
    await ensure_topics(ctx.settings)
    w = worker(ctx, NAME, "worker", env={"SILVERTINE_HANDLERS": HANDLERS},
               metrics_port=free_port())
    publisher = Publisher(ctx.settings.model_copy(
        update={"publish_max_lag": 0, "publish_max_backlog": 0}))
    mix = _Mix(time.strftime("%H%M%S"))
    produced = [0]
    seconds = run.minutes * 60

    async def send(count: int, ts_ns: int) -> int:
        batch, singles = mix.next(count, ts_ns)
        messages = await publisher.publish_many(batch)
        await asyncio.gather(*(publisher.publish(e) for e in singles))
        produced[0] += len(batch) + len(singles)
        return messages + len(singles)

    w.start()
    try:
        t0 = time.monotonic()
        load = asyncio.create_task(paced(send, run.rate, TICK_S, seconds))
        next_at, last_say = 0.0, 0.0
        while not load.done():
            w.child.check_alive("soaking")
            sample = await _sample(ctx, w, t0, produced[0])
            run.samples.append(sample)
            if sample.t_s - last_say >= 60 or not last_say:
                last_say = sample.t_s or 1e-9
                say(f"[{NAME}] {sample.t_s / 60:5.1f} min: worker {sample.worker_rss:.0f} MB, "
                    f"redis {sample.redis_rss:.0f} MB (used {sample.redis_used:.0f}), "
                    f"broker {sample.kafka_rss:.0f} MB; produced {sample.produced:,}, "
                    f"logged {sample.logged:,}, handled {sample.handled:,}, "
                    f"DLQ {sample.dlq:,}")
            next_at += run.sample_s
            await asyncio.wait({load}, timeout=max(0.0, t0 + next_at - time.monotonic()))
        offered = load.result()
        run.produced = produced[0]
        say(f"[{NAME}] load done: {offered.events:,} events in {offered.seconds:.0f} s "
            f"({offered.events / offered.seconds:,.0f}/s, {offered.messages:,} messages)")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logged, handled, _ = await _counts(ctx, w.settings.app_id)
            if logged >= run.produced and handled >= run.produced:
                run.drained = True
                break
            await asyncio.sleep(1.0)
        run.samples.append(await _sample(ctx, w, t0, produced[0]))
        run.redis_keys = await _redis_keys(ctx)
    finally:
        await publisher.close()
        w.child.stop()


async def _redis_keys(ctx: BenchContext, top: int = 8) -> dict[str, float]:
    """MB held per key family (``log:market_data``, ``ids:order``, ``handlers:…``)."""
    redis = ctx.redis()
    try:
        sizes: dict[str, float] = {}
        async for key in redis.scan_iter(count=1000):
            name = key.decode()
            family = ":".join(name.split(":")[:2]) if not name.startswith("handlers:") \
                else "handlers:<app>:" + name.rsplit(":", 1)[-1]
            used = await redis.memory_usage(key, samples=0) or 0
            sizes[family] = sizes.get(family, 0.0) + used / 1e6
    finally:
        await redis.aclose()
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:top])


# --- analysis and the RESULTS.md section ---------------------------------------


def fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares ``y = a + b·x``: (slope b, its standard error, intercept a)."""
    n = len(points)
    if n < 3:
        return math.nan, math.nan, math.nan
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return math.nan, math.nan, math.nan
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    a = my - b * mx
    residual = sum((y - a - b * x) ** 2 for x, y in points)
    return b, math.sqrt(residual / (n - 2) / sxx), a


BEHIND_S = 10.0
"""The pipeline *kept up* while its log was less than this many seconds of load behind."""


def kept_up_until(run: SoakRun) -> float | None:
    """Seconds into the load when the log first fell ``BEHIND_S`` behind; None if never."""
    for sample in run.samples:
        if sample.t_s <= run.minutes * 60 + 1 and \
                sample.produced - sample.logged > run.rate * BEHIND_S:
            return sample.t_s
    return None


def _series_table(run: SoakRun, during: list[Sample], warm: list[Sample]) -> list[str]:
    """One row per series: values, the slope over ``warm``, per event logged in ``warm``."""
    minutes = [(s.t_s / 60, float(s.logged)) for s in warm]
    logged_per_min = fit(minutes)[0]
    lines = [f"Fit over {warm[0].t_s / 60:.1f}–{warm[-1].t_s / 60:.1f} min ({len(warm)} "
             f"samples); events logged meanwhile: {logged_per_min / 60:,.0f}/s "
             f"(offered {run.rate:,.0f}/s). *bytes/event* = slope / events logged per minute.",
             "", "| series | at start | after warm-up | end of window | max | slope MB/min "
             "(± std. error) | MB/hour | bytes/event | verdict |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key, label in SERIES.items():
        values = [getattr(s, key) for s in during]
        slope, error, _ = fit([(s.t_s / 60, getattr(s, key)) for s in warm])
        verdict = ("**growing**" if slope > FLAT_MB_PER_MIN else "flat"
                   if math.isfinite(slope) else "–")
        per_event = slope * 1e6 / logged_per_min if logged_per_min > 0 else math.nan
        lines.append(f"| {label} | {values[0]:,.1f} | {getattr(warm[0], key):,.1f} | "
                     f"{getattr(warm[-1], key):,.1f} | {max(values):,.1f} | "
                     f"{slope:+.3f} (± {error:.3f}) | {slope * 60:+,.1f} | {per_event:+,.1f} | "
                     f"{verdict} |")
    return lines


def _cpu_cell(a: Sample, b: Sample, key: str) -> str:
    used = (getattr(b, key) - getattr(a, key)) / (b.t_s - a.t_s) if b.t_s > a.t_s else math.nan
    return "–" if not math.isfinite(used) else f"{used:.0%}"


def render(run: SoakRun, work_dir: str) -> str:
    """The ``## Soak`` section of ``RESULTS.md``, between the soak markers."""
    load_s = run.minutes * 60
    during = [s for s in run.samples if s.t_s <= load_s + 1]
    warm = [s for s in during if s.t_s >= run.warmup_fraction * load_s]
    lines = [BEGIN, "", "## Soak: memory under steady load (MB/min after warm-up)", "",
             (__doc__ or "").split("\n\n", 1)[1].split("\n\nThe section it writes")[0].strip(),
             "", f"This run: {run.minutes:g} min at {run.rate:,.0f} events/s, samples every "
             f"{run.sample_s:g} s, warm-up {run.warmup_fraction:.0%} of the run. "
             f"Settings passed: {', '.join(f'`{k}={v}`' for k, v in run.env.items()) or 'none'}."
             f" Samples: `{work_dir}/soak-samples.json`.", "",
             "| fact | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in run.facts.items()]
    behind = kept_up_until(run)
    if len(warm) >= 3:
        lines += ["", "**After warm-up, to the end of the load:**", ""]
        lines += _series_table(run, during, warm)
        kept = [s for s in warm if behind is None or s.t_s < behind]
        if behind is not None and len(kept) >= 3:
            lines += ["", f"**While the pipeline kept up** (the log fell more than "
                      f"{BEHIND_S:g} s of load behind at {behind / 60:.1f} min; after that "
                      "Redis and the worker grow only as fast as events get through, so the "
                      "window above understates them):", ""]
            lines += _series_table(run, during, kept)
        elif behind is not None:
            lines += ["", f"The log fell more than {BEHIND_S:g} s of load behind at "
                      f"{behind / 60:.1f} min, before the warm-up ended."]
    last = run.samples[-1] if run.samples else None
    if last is not None:
        lines += ["", f"Throughput check: {run.produced:,} events published; at the end "
                  f"{last.logged:,} log entries and {last.handled:,} handled by the handler "
                  f"group ({'drained' if run.drained else '**not drained** within 120 s'}), "
                  f"{last.dlq:,} in the DLQ."
                  + (f" {run.note}" if run.note else "")]
    if run.redis_keys:
        lines += ["", "What Redis held at the end (`MEMORY USAGE` per key family, MB): "
                  + ", ".join(f"`{k}` {v:,.1f}" for k, v in run.redis_keys.items()) + "."]
    lines += ["", "<details><summary>the series, every minute</summary>", "",
              "*CPU* columns: share of one core over the minute before the sample.", "",
              "| min | worker MB | redis RSS MB | redis used MB | broker MB | published | "
              "logged | handled | worker CPU | redis CPU | broker CPU |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    step = max(1, round(60 / run.sample_s))
    picked = run.samples[::step] + run.samples[-1:]
    for before, s in zip([picked[0], *picked], picked, strict=False):
        lines.append(f"| {s.t_s / 60:.1f} | {s.worker_rss:,.1f} | {s.redis_rss:,.1f} | "
                     f"{s.redis_used:,.1f} | {s.kafka_rss:,.1f} | {s.produced:,} | "
                     f"{s.logged:,} | {s.handled:,} | {_cpu_cell(before, s, 'worker_cpu')} | "
                     f"{_cpu_cell(before, s, 'redis_cpu')} | {_cpu_cell(before, s, 'kafka_cpu')} |")
    lines += ["", "</details>"]
    if NOTES.exists():
        lines += ["", "### Analysis", "", NOTES.read_text().strip()]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Put ``section`` in place of the soak block of ``path`` (or at its end)."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head.rstrip("\n") + "\n\n" + section + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def _load(path: Path) -> SoakRun:
    data = json.loads(path.read_text())
    data["samples"] = [Sample(**s) for s in data["samples"]]
    return SoakRun(**data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="load time (default 20)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s (default 2000)")
    parser.add_argument("--warmup", type=float, default=0.25,
                        help="fraction of the run left out of the fit (default 0.25)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--env", action="append", default=[], metavar="SILVERTINE_X=VALUE",
                        help="a setting for the stack and the worker (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--from-samples", type=Path, default=None, metavar="JSON",
                        help="measure nothing: write the section from a run's samples")
    parser.add_argument("--keep", action="store_true", help="keep the work dir's Redis data")
    args = parser.parse_args(argv)
    if args.from_samples is not None:
        write_section(args.output, render(_load(args.from_samples),
                                          str(args.from_samples.parent)))
        print(f"soak: rewrote the soak section of {args.output}", flush=True)
        return 0
    if any("=" not in pair or not pair.startswith("SILVERTINE_") for pair in args.env):
        parser.error("--env takes SILVERTINE_NAME=VALUE")
    passed = dict(pair.split("=", 1) for pair in args.env)
    passed.update({k: v for k, v in os.environ.items() if k.startswith("SILVERTINE_")})
    os.environ.update(passed)  # read by load_settings for the stack, and so by the worker

    work_dir = Path(tempfile.mkdtemp(prefix="silvertine-soak-"))
    print(f"soak: work dir {work_dir}", flush=True)
    facts = machine_facts()
    stack, settings, pids = start_stack(work_dir / NAME)
    run = SoakRun(minutes=args.minutes, rate=args.rate, warmup_fraction=args.warmup,
                  sample_s=args.sample_s, env=passed, facts={})
    try:
        facts["broker"] = Path(f"/proc/{pids['kafka']}/exe").resolve().name
        ctx = BenchContext(settings=settings, work_dir=work_dir, runs=1, quick=False,
                           profile="never", server_pids=pids,
                           say=lambda text: print(text, flush=True))
        asyncio.run(soak(ctx, run))
    except Exception as exc:  # record what was measured, and why it stopped
        run.note = f"**The soak stopped early:** `{exc!r}`."
        print(f"soak: FAILED: {exc!r}", flush=True)
    finally:
        stack.down()
        if not args.keep:
            shutil.rmtree(work_dir / NAME / "stack" / "redis", ignore_errors=True)
    facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    keep = ("date (UTC)", "cores", "silvertine-streams", "load average at start",
            "load average at end", "broker")
    run.facts = {k: facts[k] for k in keep if k in facts}
    samples = work_dir / "soak-samples.json"
    samples.write_text(json.dumps(asdict(run), indent=1))
    write_section(args.output, render(run, str(work_dir)))
    print(f"soak: wrote {args.output} (samples {samples})", flush=True)
    return 1 if run.note else 0


if __name__ == "__main__":
    sys.exit(main())
