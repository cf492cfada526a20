"""``silvertine demo``: the stack, a worker, and events of every type going through.

It starts the embedded stack (unless URLs are set), runs one ``silvertine
worker`` process, publishes events of every type through both ingress paths
(plus a duplicate, a gap and an invalid event, so the guarantees show), and
shows the canonical logs and the DLQ filling up until ``--seconds`` pass or
Ctrl-C. Everything it started is stopped by PID on the way out.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.embedded.processes import die_with_parent_preexec
from silvertine_streams.events import (
    Event,
    FillEvent,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    OrderType,
    SignalEvent,
    SignalType,
    SystemEvent,
)
from silvertine_streams.kafka_admin import ensure_topics
from silvertine_streams.publisher import Publisher
from silvertine_streams.settings import Settings, settings_env
from silvertine_streams.topics import DLQ_STREAM, EVENT_TYPES, log_stream

SYMBOLS = ("AAPL", "MSFT", "NVDA", "ESZ6")


@dataclass
class DemoFeed:
    """Generates events of every type, with per-symbol sequences."""

    source: str = "demo-feed"
    sequences: dict[str, int] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SYMBOLS, 100.0))
    orders: int = 0

    def tick(self, symbol: str) -> MarketDataEvent:
        """Return the next market-data tick of ``symbol`` (a random walk)."""
        price = max(1.0, self.prices[symbol] * (1 + random.gauss(0, 0.001)))
        self.prices[symbol] = price
        sequence = self.sequences.get(symbol, 0) + 1
        self.sequences[symbol] = sequence
        return MarketDataEvent(symbol=symbol, price=round(price, 2), volume=100.0,
                               bid=round(price - 0.01, 2), ask=round(price + 0.01, 2),
                               source=self.source, sequence=sequence)

    def trade(self, symbol: str) -> list[Event]:
        """Return a signal, the order it leads to, and the order's fill."""
        self.orders += 1
        order_id = f"demo-{self.orders}"
        price = round(self.prices[symbol], 2)
        return [
            SignalEvent(symbol=symbol, strategy_id="demo-ma", signal_type=SignalType.BUY,
                        strength=0.7, source="demo-strategy"),
            OrderEvent(order_id=order_id, symbol=symbol, side=OrderSide.BUY, quantity=10,
                       order_type=OrderType.LIMIT, price=price, source="demo-oms"),
            FillEvent(order_id=order_id, symbol=symbol, side=OrderSide.BUY, executed_qty=10,
                      executed_price=price, commission=0.5, source="demo-venue"),
        ]


async def _counts(redis: aioredis.Redis) -> dict[str, int]:
    pipe = redis.pipeline(transaction=False)
    for event_type in EVENT_TYPES:
        pipe.xlen(log_stream(event_type))
    pipe.xlen(DLQ_STREAM)
    values = await pipe.execute()
    return dict(zip([*EVENT_TYPES, DLQ_STREAM], values, strict=True))


def _view(counts: dict[str, int], before: dict[str, int], elapsed: float, note: str) -> Table:
    table = Table(title=f"silvertine demo — {elapsed:5.1f} s — {note}")
    table.add_column("stream")
    table.add_column("entries", justify="right")
    table.add_column("new this run", justify="right")
    for name, count in counts.items():
        label = DLQ_STREAM if name == DLQ_STREAM else log_stream(name)
        table.add_row(label, str(count), str(count - before.get(name, 0)))
    return table


async def _run(settings: Settings, seconds: float, console: Console) -> dict[str, int]:
    await ensure_topics(settings)
    redis = aioredis.Redis.from_url(str(settings.redis_url))
    feed = DemoFeed()
    # Each ingress path gets its own source: a (source, symbol) stream's sequence
    # only means something along one path.
    redis_feed = DemoFeed(source="demo-feed-redis")
    before = await _counts(redis)
    started = time.monotonic()
    async with Publisher(settings) as publisher:
        # A duplicate, a sequence gap and an invalid event, so the view shows them caught.
        first = feed.tick("AAPL")
        await publisher.publish_many([first, first])
        await publisher.publish(feed.tick("MSFT"))
        feed.sequences["MSFT"] += 4  # MSFT 2..5 never come: one gap report
        await publisher.publish(SystemEvent(kind="demo_started", message="hello",
                                            source="demo"))
        await publisher.publish(feed.tick("MSFT"))
        await redis.xadd("events:market_data",
                         {"event": b'{"event_type":"market_data","symbol":"","price":1}'})
        with Live(console=console, refresh_per_second=4) as live:
            while (elapsed := time.monotonic() - started) < seconds:
                await publisher.publish_many([feed.tick(s) for s in SYMBOLS])
                await publisher.publish_many_to_ingress([redis_feed.tick(random.choice(SYMBOLS))])
                if random.random() < 0.2:
                    await publisher.publish_many(feed.trade(random.choice(SYMBOLS)))
                counts = await _counts(redis)
                live.update(_view(counts, before, elapsed,
                                  "1 duplicate sent (logged once), 1 gap, 1 invalid → dlq"))
                await asyncio.sleep(0.25)
    await redis.aclose()
    return {name: count - before.get(name, 0) for name, count in (await _final(settings)).items()}


async def _final(settings: Settings) -> dict[str, int]:
    redis = aioredis.Redis.from_url(str(settings.redis_url))
    try:
        return await _counts(redis)
    finally:
        await redis.aclose()


def run_demo(settings: Settings, seconds: float) -> int:
    """Run the demo; return the process exit status."""
    console = Console()
    stack = EmbeddedStack(settings, die_with_parent=True)
    own_stack = settings.kafka_url is None or settings.redis_url is None
    if own_stack:
        console.print("[bold]starting the embedded stack[/] (Tansu + redis-server)…")
        settings = stack.up()
    console.print(f"kafka {settings.kafka_url}   redis {settings.redis_url}")
    worker = _start_worker(settings)
    interrupted = False
    try:
        totals = asyncio.run(_run(settings, seconds, console))
    except KeyboardInterrupt:
        interrupted = True
        totals = {}
    finally:
        _stop(worker)
        if own_stack:
            stack.down()
    console.print()
    if totals:
        console.print("[bold]this run:[/] " + ", ".join(f"{k}={v}" for k, v in totals.items()))
    console.print("worker and embedded servers stopped." if own_stack else "worker stopped.")
    return 130 if interrupted else 0


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = settings_env(settings, os.environ)
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
