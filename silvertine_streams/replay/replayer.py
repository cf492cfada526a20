"""Replay the canonical log by time range, type, symbol and predicate, at a chosen speed.

Choices (documented in docs/ops.md):

* **Range = log time.** ``since``/``until`` select entries by the time the
  canonical log received them (the ms in each entry id): ``since <= t < until``.
  That is an exact, indexed XRANGE. Live events are logged milliseconds after
  their ``timestamp``; for a backfill the two differ, and
  ``where='timestamp >= "…"'`` filters on the event's own time.
* **Order and pacing = event time** by default (``clock="event"``): the gaps
  between the events' ``timestamp`` values, divided by the speed, are the gaps
  a handler sees. Several types are merged by that clock with a heap; within
  one type the log order is kept as it is (it holds each symbol's sequence
  order), and an event whose timestamp runs backwards is delivered at once,
  never reordered. ``clock="log"`` paces by log time instead: the engine's own
  processing rhythm, bursts of envelopes included.
* **Replays never enter the canonical log.** Every replayed event carries
  ``metadata["replay"] = True`` and ``metadata["replayed_from"] = <entry id>``;
  the sinks offered here print, call handlers, or produce to a topic that is
  *not* a ``silvertine.<type>`` topic (the pipeline would log them again).
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from redis.asyncio import Redis

from silvertine_streams.errors import ActionRefused
from silvertine_streams.events import Event, encode_event
from silvertine_streams.replay.reader import (
    PAGE_SIZE,
    Clock,
    LogPage,
    entry_ms,
    event_clock,
    id_range,
    log_clock,
    mark_replayed,
    read_pages,
)
from silvertine_streams.replay.where import Predicate, compile_where
from silvertine_streams.topics import EVENT_TYPES

Speed = float | Literal["max", "realtime", "step"]
"""``"max"`` (no waiting), ``"realtime"`` (= 1.0), a factor > 0 (2.0 = twice as
fast), or ``"step"`` (one event per Enter)."""

Sink = Callable[[Event], Awaitable[None] | None]
"""Receives each replayed event; sync or async."""

MIN_SLEEP_S = 0.001
"""Shorter waits are skipped (and caught up with the next one): sleeping costs more."""


class ReplayError(ActionRefused):
    """A replay could not start; the message says why (exit status 2, nothing was sent)."""


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """Where a running replay is, for progress displays.

    Attributes:
        replayed: events delivered so far.
        filtered: events read but left out by ``symbols``/``where``.
        position_ms: log time (ms) of the last entry read.
    """

    replayed: int
    filtered: int
    position_ms: int


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay did.

    Attributes:
        replayed: events delivered to the sink.
        filtered: events in the range left out by ``symbols``/``where``.
        undecodable: log entries without a valid event (skipped).
        duration_s: wall time from the first read to the last delivery.
        span_s: the replay clock's span from the first to the last replayed event.
        stopped: True when step mode was quit before the end.
    """

    replayed: int
    filtered: int
    undecodable: int
    duration_s: float
    span_s: float
    stopped: bool = False

    @property
    def rate(self) -> float:
        """Events per second of wall time."""
        return self.replayed / self.duration_s if self.duration_s > 0 else 0.0


def parse_speed(text: str | float) -> Speed:
    """Parse ``max``, ``realtime``, ``step``, or a factor such as ``2``, ``0.5`` or ``10x``.

    Raises:
        ReplayError: anything else, or a factor that is not > 0.
    """
    if isinstance(text, int | float):
        factor = float(text)
    else:
        word = text.strip().lower()
        if word in ("max", "realtime", "step"):
            return word  # type: ignore[return-value]  # one of the literals
        try:
            factor = float(word.removesuffix("x"))
        except ValueError:
            raise ReplayError(
                f"speed {text!r} is not valid; use realtime, max, step or a factor like 2 or 0.5"
            ) from None
    if not factor > 0 or factor == float("inf"):
        raise ReplayError(f"speed factor must be a finite number > 0, got {text!r}")
    return factor


def print_sink(stream: Any = None) -> Sink:
    """Return a sink that writes each event as one JSON line (stdout by default)."""
    out = stream if stream is not None else sys.stdout.buffer

    def write(event: Event) -> None:
        out.write(encode_event(event) + b"\n")

    return write


async def replay(
    redis: Redis,
    types: Sequence[str],
    since: datetime | None = None,
    until: datetime | None = None,
    symbols: Collection[str] | None = None,
    where: Predicate | str | None = None,
    speed: Speed | str = "max",
    to: Sink | None = None,
    *,
    clock: Literal["event", "log"] = "event",
    page_size: int = PAGE_SIZE,
    on_progress: Callable[[ReplayProgress], None] | None = None,
    input_fn: Callable[[str], str] = input,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> ReplaySummary:
    """Replay ``log:<type>`` of ``types`` into ``to``.

    Args:
        redis: an asyncio client of the Redis holding the canonical log.
        types: event types to replay (merged by the replay clock).
        since: first log time to include (inclusive); None = the beginning.
        until: log time to stop before (exclusive); None = the end.
        symbols: only events whose ``symbol`` is one of these.
        where: a predicate over events, or a filter expression (see
            :mod:`~silvertine_streams.replay.where`).
        speed: ``"max"``, ``"realtime"``, a factor > 0, or ``"step"``.
        to: the sink; None prints JSON lines to stdout.
        clock: pace and merge by the events' ``timestamp`` (``"event"``) or by
            the time the log received them (``"log"``).
        page_size: entries per read.
        on_progress: called after each page is read (and at the end).
        input_fn: how step mode waits for Enter (``"q"`` quits); inject in tests.
        sleep: how pacing waits; inject in tests.
        monotonic: the wall clock pacing measures against; inject in tests.

    Raises:
        ReplayError: unknown type, or bad speed.
        InvalidFilter: ``where`` is a string outside the filter language.
    """
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown or not types:
        raise ReplayError(
            f"unknown event type(s) {unknown or types}; types: {', '.join(EVENT_TYPES)}"
        )
    start, end = id_range(since, until)
    pages = [read_pages(redis, t, start, end, page_size) for t in dict.fromkeys(types)]
    return await replay_pages(
        pages, types, symbols, where, speed, to, clock=clock, on_progress=on_progress,
        input_fn=input_fn, sleep=sleep, monotonic=monotonic,
    )


async def replay_pages(
    pages: Sequence[AsyncIterator[LogPage]],
    types: Sequence[str],
    symbols: Collection[str] | None = None,
    where: Predicate | str | None = None,
    speed: Speed | str = "max",
    to: Sink | None = None,
    *,
    clock: Literal["event", "log"] = "event",
    on_progress: Callable[[ReplayProgress], None] | None = None,
    input_fn: Callable[[str], str] = input,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> ReplaySummary:
    """Replay already-opened page streams (one per type): the core of :func:`replay`.

    Arguments as for :func:`replay`; ``pages`` are closed at the end.
    """
    pace = parse_speed(speed)
    predicate = compile_where(where, types) if isinstance(where, str) else where
    wanted = frozenset(symbols) if symbols else None
    sink = to if to is not None else print_sink()
    key_of: Clock = event_clock if clock == "event" else log_clock
    sources = [_Source(source_pages, wanted, predicate) for source_pages in pages]
    run = _Run(sink, pace, key_of, on_progress, input_fn, sleep, monotonic)
    try:
        if len(sources) == 1 and pace == "max":
            await run.drain_fast(sources[0])
        else:
            await run.merge(sources)
    finally:
        for source in sources:
            await source.close()
    return run.summary(sources)


class _Source:
    """One type's pages, filtered, with a cursor on the current page."""

    def __init__(
        self,
        pages: AsyncIterator[LogPage],
        symbols: frozenset[str] | None,
        predicate: Predicate | None,
    ) -> None:
        self._pages = pages
        self._symbols = symbols
        self._predicate = predicate
        self.events: list[Event] = []
        self.entry_ids: list[str] = []
        self.index = 0
        self.filtered = 0
        self.undecodable = 0
        self.position_ms = 0

    async def next_page(self) -> bool:
        """Load the next page holding at least one event that passes; False at the end."""
        async for page in self._pages:
            self.undecodable += len(page.undecodable)
            if page.entry_ids:
                self.position_ms = entry_ms(page.entry_ids[-1])
            events, entry_ids = self._filter(page.events, page.entry_ids)
            if events:
                mark_replayed(events, entry_ids)
                self.events, self.entry_ids, self.index = events, entry_ids, 0
                return True
        self.events, self.entry_ids, self.index = [], [], 0
        return False

    def _filter(self, events: list[Event], entry_ids: list[str]) -> tuple[list[Event], list[str]]:
        symbols, predicate = self._symbols, self._predicate
        if symbols is None and predicate is None:
            return events, entry_ids
        kept_events: list[Event] = []
        kept_ids: list[str] = []
        for event, entry_id in zip(events, entry_ids, strict=True):
            if symbols is not None and getattr(event, "symbol", None) not in symbols:
                continue
            if predicate is not None and not predicate(event):
                continue
            kept_events.append(event)
            kept_ids.append(entry_id)
        self.filtered += len(events) - len(kept_events)
        return kept_events, kept_ids

    async def close(self) -> None:
        aclose = getattr(self._pages, "aclose", None)
        if aclose is not None:
            await aclose()


class _Run:
    """The delivery loop: pacing, step prompts, counting."""

    def __init__(
        self,
        sink: Sink,
        pace: Speed,
        key_of: Clock,
        on_progress: Callable[[ReplayProgress], None] | None,
        input_fn: Callable[[str], str],
        sleep: Callable[[float], Awaitable[Any]],
        monotonic: Callable[[], float],
    ) -> None:
        self.sink = sink
        self.is_async = inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
            type(sink).__call__
        )
        self.factor = 1.0 if pace == "realtime" else (pace if isinstance(pace, float) else None)
        self.step = pace == "step"
        self.key_of = key_of
        self.on_progress = on_progress
        self.input_fn = input_fn
        self.sleep = sleep
        self.monotonic = monotonic
        self.replayed = 0
        self.stopped = False
        self.started = monotonic()
        self.first_key: float | None = None
        self.last_key: float | None = None
        self.wall_zero = 0.0

    async def drain_fast(self, source: _Source) -> None:
        """One type as fast as possible: no keys, no heap, one call per event."""
        sink, is_async = self.sink, self.is_async
        while await source.next_page():
            events = source.events
            if is_async:
                for event in events:
                    await sink(event)  # type: ignore[misc]  # the sink is async here
            else:
                for event in events:
                    result = sink(event)
                    if result is not None and inspect.isawaitable(result):
                        await result
            self.replayed += len(events)
            if self.first_key is None:
                self.first_key = self.key_of(events[0], source.entry_ids[0])
            self.last_key = self.key_of(events[-1], source.entry_ids[-1])
            self.progress([source])
        self.progress([source])

    async def merge(self, sources: list[_Source]) -> None:
        """Several types (or a paced replay): merge by the clock with a heap."""
        heap: list[tuple[float, int, _Source]] = []
        for tie, source in enumerate(sources):
            if await source.next_page():
                heap.append((self.key_of(source.events[0], source.entry_ids[0]), tie, source))
        heapq.heapify(heap)
        self.progress(sources)
        while heap and not self.stopped:
            key, tie, source = heap[0]
            event = source.events[source.index]
            await self.deliver(event, key)
            source.index += 1
            if source.index >= len(source.events):
                more = await source.next_page()
                self.progress(sources)
                if not more:
                    heapq.heappop(heap)
                    continue
            heapq.heapreplace(
                heap, (self.key_of(source.events[source.index], source.entry_ids[source.index]),
                       tie, source),
            )
        self.progress(sources)

    async def deliver(self, event: Event, key: float) -> None:
        if self.first_key is None:
            self.first_key = key
            self.wall_zero = self.monotonic()
        if self.factor is not None:
            # Never wait for an event whose clock runs backwards: deliver it now.
            due = self.wall_zero + (key - self.first_key) / self.factor
            delay = due - self.monotonic()
            if delay >= MIN_SLEEP_S:
                await self.sleep(delay)
        result = self.sink(event)
        if result is not None and inspect.isawaitable(result):
            await result
        self.replayed += 1
        self.last_key = key if self.last_key is None else max(self.last_key, key)
        if self.step:
            answer = await asyncio.to_thread(
                self.input_fn, f"[{self.replayed}] Enter = next event, q = quit: "
            )
            if answer.strip().lower() in ("q", "quit"):
                self.stopped = True

    def progress(self, sources: list[_Source]) -> None:
        if self.on_progress is not None:
            self.on_progress(ReplayProgress(
                replayed=self.replayed,
                filtered=sum(s.filtered for s in sources),
                position_ms=max((s.position_ms for s in sources), default=0),
            ))

    def summary(self, sources: list[_Source]) -> ReplaySummary:
        span = (self.last_key - self.first_key
                if self.first_key is not None and self.last_key is not None else 0.0)
        return ReplaySummary(
            replayed=self.replayed,
            filtered=sum(s.filtered for s in sources),
            undecodable=sum(s.undecodable for s in sources),
            duration_s=self.monotonic() - self.started,
            span_s=max(span, 0.0),
            stopped=self.stopped,
        )
