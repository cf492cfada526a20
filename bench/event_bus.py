"""Scenario: the in-process `EventBus` against a bare `asyncio.Queue` loop, in process.

The same validated quotes (built by `bench.pipeline_throughput.make_events`,
encoded into 500-event envelopes and decoded back with
`silvertine_streams.events.decode_message`, which runs every rule) go through:

* **bus**: `await bus.publish(event)` per event on an `EventBus` (defaults:
  10,000-event queues that block when full, dedupe by `event_id` on, circuit
  and timeout accounting on) with one sync counting handler; the clock stops
  when `await bus.stop()` has delivered the last event.
* **bus, async handler**: the same with `async def` counting handler (what the
  platform's own performance test subscribes).
* **queue**: a bare loop: `await queue.put(event)` into an
  `asyncio.Queue(maxsize=10000)`, one consumer task doing
  `handler(await queue.get())` with the same counting handler; no dedupe, no
  timeouts, no circuits, no metrics. The floor of "an asyncio queue between a
  producer and a handler".
* **bus from bytes** and **queue from bytes**: both again, each fed from the
  envelopes' bytes, decoding (and so validating) inside the clock: what a
  backtest reading encoded events pays end to end.

Every variant must deliver every event exactly once (checked). The variants
are interleaved round by round, each round with a fresh bus or queue and
freshly decoded events (so no variant finds its event ids already hashed by
an earlier one), after a `gc.collect()`; the cyclic GC stays on. Besides
wall-clock events/s, each run reports events per CPU second of the bench
process (`time.process_time()`): on a shared machine that figure moves much
less than the wall-clock one.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

from bench.harness import BenchContext, BenchError
from bench.pipeline_throughput import SYMBOLS, make_events
from bench.report import Metric, Ratio, Row, Run, ScenarioReport, Target
from silvertine_streams.events import Event, EventType, decode_message, encode_batch
from silvertine_streams.handlers import EventBus

NAME = "event_bus"
TITLE = "In-process EventBus: validated events, dedupe, one handler (events/s, in process)"
STACK = None  # in process: no servers
EVENTS = 1_000_000
ENVELOPE_EVENTS = 500
TARGET_RATE = 1_000_000
PLATFORM_FLOOR = 1_000
QUEUE_SIZE = 10_000

Variant = Callable[[list[Event], list[bytes]], Awaitable[int]]


class _Counter:
    """The one handler: counts what it is given."""

    def __init__(self) -> None:
        self.count = 0

    def sync(self, event: Event) -> None:
        self.count += 1

    async def coro(self, event: Event) -> None:
        self.count += 1


def _decoded(envelopes: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for data in envelopes:
        events += decode_message(data, EventType.MARKET_DATA).events
    return events


async def _bus(events: list[Event], envelopes: list[bytes], *, is_async: bool = False,
               from_bytes: bool = False) -> int:
    counter = _Counter()
    bus = EventBus(max_queue_size=QUEUE_SIZE)
    bus.subscribe(counter.coro if is_async else counter.sync, [EventType.MARKET_DATA])
    await bus.start()
    publish = bus.publish
    if from_bytes:
        market_data = EventType.MARKET_DATA
        for data in envelopes:
            for event in decode_message(data, market_data).events:
                await publish(event)
    else:
        for event in events:
            await publish(event)
    await bus.stop()
    metrics = bus.get_metrics()
    if metrics["events_duplicate"] or metrics["events_failed"]:
        raise BenchError(f"bus variant: unexpected metrics {metrics}")
    return counter.count


async def _queue(events: list[Event], envelopes: list[bytes], *, from_bytes: bool = False) -> int:
    counter = _Counter()
    handler = counter.sync
    queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=QUEUE_SIZE)

    async def consume() -> None:
        get = queue.get
        while (event := await get()) is not None:
            handler(event)

    consumer = asyncio.create_task(consume())
    put = queue.put
    if from_bytes:
        market_data = EventType.MARKET_DATA
        for data in envelopes:
            for event in decode_message(data, market_data).events:
                await put(event)
    else:
        for event in events:
            await put(event)
    await put(None)
    await consumer
    return counter.count


VARIANTS: dict[str, tuple[str, Variant]] = {
    "bus": ("bus: `EventBus.publish` per event, dedupe, one sync handler", _bus),
    "bus_async": ("bus, one `async def` handler",
                  lambda ev, env: _bus(ev, env, is_async=True)),
    "queue": ("bare `asyncio.Queue` put/get loop, the same sync handler", _queue),
    "bus_bytes": ("bus from bytes: `decode_message` per envelope + publish",
                  lambda ev, env: _bus(ev, env, from_bytes=True)),
    "queue_bytes": ("bare queue from bytes: `decode_message` per envelope + put",
                    lambda ev, env: _queue(ev, env, from_bytes=True)),
}


async def run(ctx: BenchContext) -> ScenarioReport:
    count = int(ctx.options.get("events", EVENTS // 10 if ctx.quick else EVENTS))
    count -= count % ENVELOPE_EVENTS
    source = make_events(count)
    envelopes = [encode_batch(source[i:i + ENVELOPE_EVENTS])
                 for i in range(0, count, ENVELOPE_EVENTS)]
    del source
    rows = {key: Row(key, label) for key, (label, _) in VARIANTS.items()}
    await VARIANTS["bus"][1](_decoded(envelopes[:20]), envelopes[:20])  # warm up
    rounds = max(ctx.runs, 1)
    for round_no in range(1, rounds + 1):
        for key, (_, variant) in VARIANTS.items():
            # Validated on the way in, as a worker would get them; fresh objects each run.
            events = [] if key.endswith("_bytes") else _decoded(envelopes)
            gc.collect()
            started, cpu_started = time.perf_counter(), time.process_time()
            delivered = await variant(events, envelopes)
            seconds = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            del events
            if delivered != count:
                raise BenchError(f"{key}: delivered {delivered} of {count} events")
            rows[key].runs.append(Run(events=count, seconds=seconds, values={
                "us_per_event": seconds / count * 1e6, "cpu_rate": count / cpu_s}))
            ctx.say(f"[{NAME}] round {round_no} {key:12s} {count / seconds:12,.0f} events/s "
                    f"({count / cpu_s:12,.0f} per CPU second)")
    report = ScenarioReport(
        name=NAME, title=TITLE,
        description=(__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nThis run: {count:,} quotes over {SYMBOLS} symbols, {rounds} rounds per variant.",
        rows=list(rows.values()), cpu_processes=(),
        metrics=[Metric("rate", "events/s (wall)", 0), Metric("cpu_rate", "events/CPU s", 0),
                 Metric("us_per_event", "µs/event (wall)", 3)],
        unit_note="Higher events/s is better; the ratios are *bus / bare queue*, "
                  "so >1× means the bus is faster.",
    )
    for metric, unit in (("rate", "wall"), ("cpu_rate", "per CPU second")):
        report.ratios += [
            Ratio(f"bus / bare queue ({unit})", "bus", "queue", metric),
            Ratio(f"bus, async handler / bare queue ({unit})", "bus_async", "queue", metric),
            Ratio(f"bus from bytes / bare queue from bytes ({unit})", "bus_bytes",
                  "queue_bytes", metric),
        ]
    rate, cpu_rate = rows["bus"].median, rows["bus"].median_of("cpu_rate")
    report.targets += [
        Target(f"≥ {TARGET_RATE:,} events/s: bus, validated events, dedupe, one handler",
               rate >= TARGET_RATE, f"{rate:,.0f} events/s (median, wall clock)"),
        Target(f"≥ {TARGET_RATE:,} events per CPU second: the same",
               cpu_rate >= TARGET_RATE, f"{cpu_rate:,.0f} events/CPU s (median)"),
        Target(f"> {PLATFORM_FLOOR:,} events/s: the platform's floor (async handler)",
               rows["bus_async"].median > PLATFORM_FLOOR,
               f"{rows['bus_async'].median:,.0f} events/s (median)"),
    ]
    report.add_notes()
    return report
