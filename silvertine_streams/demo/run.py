"""``silvertine demo``: a live trading loop on the bus.

It starts the embedded stack (unless URLs are set) and one worker running the
demo desk (strategy, risk, venue, order table, positions: see
:mod:`silvertine_streams.demo.desk`), then feeds market data for N symbols
through both ingress paths (Kafka envelopes and the Redis ingress stream).
Every few seconds it injects a duplicate tick, an out-of-order pair and a
sequence gap, so the view shows the engine catching them. It ends after
``--seconds`` or on Ctrl-C with a summary, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from silvertine_streams.demo.desk import DESK_KEY
from silvertine_streams.demo.trading import MarketFeed
from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.embedded.processes import die_with_parent_preexec, pick_free_port
from silvertine_streams.events import MarketDataEvent
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.observability.monitor import (
    MonitorView,
    build_view,
    fetch_metrics,
    parse_metrics,
    render_rich,
)
from silvertine_streams.redis.clients import redis_client
from silvertine_streams.settings import Settings, settings_env
from silvertine_streams.topics import DLQ_STREAM, EVENT_TYPES, log_stream

INJECT_EVERY_S = 3.0


@dataclass
class DemoRun:
    """What one demo run did, for its closing summary."""

    started: datetime
    injected: dict[str, int] = field(default_factory=lambda: {
        "duplicates": 0, "out_of_order": 0, "gaps": 0})
    published: int = 0
    ended: datetime | None = None
    view: MonitorView | None = None
    counts: dict[str, int] = field(default_factory=dict)
    desk: dict[str, Any] = field(default_factory=dict)


async def _counts(redis: aioredis.Redis) -> dict[str, int]:
    pipe = redis.pipeline(transaction=False)
    for event_type in EVENT_TYPES:
        pipe.xlen(log_stream(event_type))
    pipe.xlen(DLQ_STREAM)
    return dict(zip([*EVENT_TYPES, DLQ_STREAM], await pipe.execute(), strict=True))


async def _drained_counts(redis: aioredis.Redis, settle_s: float = 1.0,
                          deadline_s: float = 15.0) -> dict[str, int]:
    """Wait until the logs stop growing (what was published is through), then count."""
    deadline = time.monotonic() + deadline_s
    counts = await _counts(redis)
    while time.monotonic() < deadline:
        await asyncio.sleep(settle_s)
        again = await _counts(redis)
        if again == counts:
            break
        counts = again
    return counts


async def _desk(redis: aioredis.Redis) -> dict[str, Any]:
    raw = await redis.get(DESK_KEY)
    return json.loads(raw) if raw else {}


def _scrape(metrics_url: str) -> Any:
    try:
        return parse_metrics(fetch_metrics(metrics_url), time.monotonic())
    except OSError:
        return None


def _desk_tables(desk: dict[str, Any]) -> list[Table]:
    positions = Table(title="positions", expand=False)
    for column in ("symbol", "qty", "avg cost", "mark", "realised", "unrealised"):
        positions.add_column(column, justify="right")
    for p in desk.get("positions", []):
        positions.add_row(p["symbol"], f"{p['quantity']:.0f}", f"{p['avg_cost']:.2f}",
                          f"{p['mark'] or 0:.2f}", f"{p['realized_pnl']:.2f}",
                          f"{p['unrealized_pnl']:.2f}")
    totals = desk.get("totals", {})
    positions.caption = (f"net PnL {totals.get('net', 0.0):.2f} "
                         f"(commission {totals.get('commission', 0.0):.2f})")
    orders = Table(title="last orders")
    for column in ("order", "symbol", "side", "qty", "price", "status", "filled"):
        orders.add_column(column)
    for o in desk.get("last_orders", []):
        orders.add_row(o["order_id"], o["symbol"], o["side"], f"{o['qty']:.0f}",
                       f"{o['price'] or 0:.2f}", o["status"], f"{o['filled']:.0f}")
    orders.caption = (f"order table {desk.get('order_status', {})}; refused by risk "
                      f"{desk.get('risk_refused', {})}; refused by the table "
                      f"{desk.get('table_rejections', {})}")
    return [positions, orders]


def _injections_line(run: DemoRun) -> str:
    injected = run.injected
    return (f"injected: {injected['duplicates']} duplicate ticks (dedupe must catch them), "
            f"{injected['out_of_order']} out-of-order pairs (reordered), "
            f"{injected['gaps']} gaps (reported once each)")


async def _feed(settings: Settings, seconds: float, symbols: int, rate: float,
                metrics_url: str, console: Console, live_view: bool) -> DemoRun:
    await ensure_topics(settings)
    redis = redis_client(settings, role="demo-feed")
    names = [f"SYM{i:02d}" for i in range(symbols)]
    kafka_feed = MarketFeed(names, seed=1, source="demo-feed")
    redis_feed = MarketFeed(names, seed=2, source="demo-feed-redis")
    run = DemoRun(started=datetime.now(UTC))
    started = time.monotonic()
    next_injection = started + 1.0
    previous = None
    batch = max(1, int(rate / 10))
    live = Live(console=console, refresh_per_second=4) if live_view else None
    try:
        if live is not None:
            live.start()
        async with Publisher(settings) as publisher:
            while (elapsed := time.monotonic() - started) < seconds:
                ticks: list[MarketDataEvent] = kafka_feed.ticks(batch)
                if time.monotonic() >= next_injection:
                    next_injection += INJECT_EVERY_S
                    ticks = _inject(kafka_feed, ticks, run)
                await publisher.publish_many(ticks)
                await publisher.publish_many_to_ingress(redis_feed.ticks(max(1, batch // 4)))
                run.published += len(ticks) + max(1, batch // 4)
                current = _scrape(metrics_url)
                if current is not None:
                    run.view = build_view(current, previous)
                    previous = current
                if live is not None:
                    run.desk = await _desk(redis)
                    parts: list[Any] = [f"silvertine demo — {elapsed:5.1f}/{seconds:.0f} s — "
                                        f"{_injections_line(run)}"]
                    if run.view is not None:
                        parts.append(render_rich(run.view))
                    parts.extend(_desk_tables(run.desk))
                    live.update(Group(*parts))
                elif int(elapsed) != int(elapsed - 0.1):
                    console.print(f"{elapsed:5.1f}s published {run.published}")
                await asyncio.sleep(0.1)
    finally:
        if live is not None:
            live.stop()
    run.ended = datetime.now(UTC)
    run.counts = await _drained_counts(redis)
    run.desk = await _desk(redis)
    await redis.aclose()
    return run


def _inject(feed: MarketFeed, ticks: list[MarketDataEvent], run: DemoRun) -> list[MarketDataEvent]:
    """Add a duplicate, an out-of-order pair and a gap to this batch."""
    first = ticks[0]
    try:
        # Before the duplicate is added: swapping it with its original reorders nothing.
        ticks = MarketFeed.inject_out_of_order(ticks)
        run.injected["out_of_order"] += 1
    except ValueError:
        pass  # a batch with one tick per stream has no pair to swap
    ticks = [*ticks, *MarketFeed.inject_duplicate(first)[1:]]
    run.injected["duplicates"] += 1
    feed.skip(first.symbol, 3)
    run.injected["gaps"] += 1
    return ticks


def _summary(run: DemoRun, console: Console, settings: Settings) -> None:
    console.print()
    console.print("[bold]summary[/]")
    counts = ", ".join(f"{name}={count}" for name, count in run.counts.items())
    console.print(f"  canonical logs and dlq: {counts}")
    console.print(f"  published market data: {run.published}; {_injections_line(run)}")
    if run.view is not None:
        for row in run.view.types:
            console.print(f"  {row.event_type:12} logged {row.logged:>8.0f}  dedupe "
                          f"{row.dedupe_hits:>4.0f}  gaps {row.gaps:>3.0f}  "
                          f"dlq {row.dead_letters:>3.0f}  sink p50/p99 "
                          f"{_ms(row.latency_p50_ms)}/{_ms(row.latency_p99_ms)} ms")
        for stage, (p50, p99) in run.view.stages.items():
            console.print(f"  latency {stage:10} p50 {_ms(p50)} ms  p99 {_ms(p99)} ms")
        if run.view.dead_letters:
            console.print(f"  dead letters by reason: {dict(run.view.dead_letters)}")
    desk = run.desk
    console.print(f"  orders {desk.get('order_status', {})}; net PnL "
                  f"{desk.get('totals', {}).get('net', 0.0):.2f}")
    since = run.started.isoformat(timespec="seconds")
    until = (run.ended or run.started).isoformat(timespec="seconds")
    env = f"SILVERTINE_DATA_DIR={settings.data_dir}"
    console.print("[bold]replay this session[/] (the log is in Redis with AOF):")
    console.print(f"  {env} silvertine stack up")
    console.print(f"  {env} silvertine replay --type order --type fill "
                  f"--since {since} --until {until} --speed max")
    console.print("[bold]metrics[/]: run a worker and the monitor:")
    console.print(f"  {env} silvertine worker &   silvertine monitor "
                  f"--url http://127.0.0.1:{settings.metrics_port}/metrics")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_demo(settings: Settings, seconds: float, symbols: int = 4, rate: float = 400.0,
             live_view: bool = True) -> int:
    """Run the demo; return the process exit status."""
    console = Console()
    stack = EmbeddedStack(settings, die_with_parent=True)
    own_stack = settings.kafka_url is None or settings.redis_url is None
    if own_stack:
        console.print("[bold]starting the embedded stack[/] (Tansu + redis-server)…")
        settings = stack.up()
    metrics_port = settings.metrics_port or pick_free_port()
    settings = settings.model_copy(update={"metrics_port": metrics_port})
    console.print(f"kafka {settings.kafka_url}   redis {settings.redis_url}   "
                  f"metrics http://127.0.0.1:{metrics_port}/metrics")
    worker = _start_worker(settings)
    interrupted = False
    run: DemoRun | None = None
    try:
        run = asyncio.run(_feed(settings, seconds, symbols, rate,
                                f"http://127.0.0.1:{metrics_port}/metrics", console, live_view))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop(worker)
        if own_stack:
            stack.down()
    if run is not None:
        _summary(run, console, settings)
    console.print("worker and embedded servers stopped." if own_stack else "worker stopped.")
    return 130 if interrupted else 0


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = settings_env(settings, os.environ)
    env["SILVERTINE_HANDLERS"] = "silvertine_streams.demo.desk:setup"
    env["SILVERTINE_WEB_PORT"] = str(pick_free_port())
    log_path = Path(settings.data_dir) / "logs" / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "silvertine_streams", "worker"],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent_preexec(os.getpid()))


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
