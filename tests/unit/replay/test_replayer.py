"""The replay core on in-memory pages: merge order, pacing by speed, step mode, counts.

Time is virtual: ``sleep`` advances a fake monotonic clock, so the tests are
exact and instant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from silvertine_streams.events import Event, MarketDataEvent, OrderEvent, OrderSide
from silvertine_streams.replay.reader import LogPage
from silvertine_streams.replay.replayer import ReplayProgress, replay_pages

T0 = datetime(2025, 3, 1, 14, 30, tzinfo=UTC)


class VirtualTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def tick(ms: int, symbol: str = "AAPL", price: float = 100.0) -> MarketDataEvent:
    return MarketDataEvent(symbol=symbol, price=price, source="feed",
                           timestamp=T0 + timedelta(milliseconds=ms))


def order(ms: int) -> OrderEvent:
    return OrderEvent(order_id=f"o-{ms}", symbol="AAPL", side=OrderSide.BUY, quantity=1,
                      source="oms", timestamp=T0 + timedelta(milliseconds=ms))


async def pages_of(event_type: str, events: Sequence[Event], per_page: int = 2,
                   first_ms: int = 1) -> AsyncIterator[LogPage]:
    """Log pages as the reader yields them; entry ids count up from ``first_ms``."""
    for start in range(0, len(events), per_page):
        chunk = events[start:start + per_page]
        # Copies: the replay marks metadata in place, as it may on freshly decoded events.
        yield LogPage(event_type, [f"{first_ms + start + i}-0" for i in range(len(chunk))],
                      [e.with_changes(metadata={}) for e in chunk])


class Recorder:
    def __init__(self, clock: VirtualTime | None = None) -> None:
        self.events: list[Event] = []
        self.times: list[float] = []
        self.clock = clock

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.clock is not None:
            self.times.append(self.clock.now)


async def test_max_speed_delivers_everything_marked_without_waiting() -> None:
    clock, sink = VirtualTime(), Recorder()
    events = [tick(ms) for ms in (0, 500, 1000, 1500, 2000)]

    summary = await replay_pages([pages_of("market_data", events)], ["market_data"],
                                 to=sink, sleep=clock.sleep, monotonic=clock.monotonic)

    assert summary.replayed == 5 and summary.filtered == 0
    assert clock.sleeps == []
    assert [e.event_id for e in sink.events] == [e.event_id for e in events]
    assert [e.metadata for e in sink.events] == [
        {"replay": True, "replayed_from": f"{n}-0"} for n in range(1, 6)]
    assert summary.span_s == pytest.approx(2.0)


@pytest.mark.parametrize(("speed", "factor"), [("realtime", 1.0), ("2", 2.0), (0.5, 0.5)])
async def test_speed_scales_the_gaps_between_event_timestamps(speed: object,
                                                              factor: float) -> None:
    clock = VirtualTime()
    sink = Recorder(clock)
    offsets_ms = [0, 100, 100, 700, 2000]

    summary = await replay_pages([pages_of("market_data", [tick(ms) for ms in offsets_ms])],
                                 ["market_data"], speed=speed, to=sink,  # type: ignore[arg-type]
                                 sleep=clock.sleep, monotonic=clock.monotonic)

    start = sink.times[0]
    assert [t - start for t in sink.times] == pytest.approx(
        [ms / 1000 / factor for ms in offsets_ms])
    assert summary.replayed == 5


async def test_types_merge_by_timestamp_and_each_log_keeps_its_order() -> None:
    clock = VirtualTime()
    ticks = [tick(0), tick(30), tick(20), tick(60)]  # a timestamp runs backwards: kept in order
    orders = [order(10), order(25), order(50)]
    sink = Recorder(clock)

    await replay_pages(
        [pages_of("market_data", ticks), pages_of("order", orders, first_ms=100)],
        ["market_data", "order"], speed="realtime", to=sink,
        sleep=clock.sleep, monotonic=clock.monotonic,
    )

    got = [(e.event_type.value, int((e.timestamp - T0) / timedelta(milliseconds=1)))
           for e in sink.events]
    assert got == [("market_data", 0), ("order", 10), ("order", 25), ("market_data", 30),
                   ("market_data", 20), ("order", 50), ("market_data", 60)]
    # The backward step (30 -> 20) is delivered at once, not waited for.
    assert sink.times[4] == pytest.approx(sink.times[3])


async def test_symbols_and_where_filter_and_are_counted() -> None:
    events = [tick(i, symbol=("AAPL", "MSFT", "NVDA")[i % 3], price=90.0 + i * 5)
              for i in range(9)]
    sink = Recorder()
    progress: list[ReplayProgress] = []

    summary = await replay_pages([pages_of("market_data", events)], ["market_data"],
                                 symbols={"AAPL", "MSFT"}, where="price >= 100", to=sink,
                                 on_progress=progress.append)

    expected = [e for e in events if e.symbol in ("AAPL", "MSFT") and e.price >= 100]
    assert [e.event_id for e in sink.events] == [e.event_id for e in expected]
    assert summary.replayed == len(expected) == 4
    assert summary.filtered == 9 - 4
    assert progress[-1].replayed == 4 and progress[-1].filtered == 5
    assert progress[-1].position_ms == 9


async def test_step_mode_waits_for_enter_and_quits_on_q() -> None:
    answers = iter(["", "", "q"])
    prompts: list[str] = []

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    sink = Recorder()
    summary = await replay_pages([pages_of("market_data", [tick(i) for i in range(6)])],
                                 ["market_data"], speed="step", to=sink, input_fn=fake_input)

    assert summary.replayed == 3 and summary.stopped
    assert len(prompts) == 3


async def test_async_sinks_are_awaited() -> None:
    seen: list[str] = []

    async def sink(event: Event) -> None:
        seen.append(event.event_id)

    events = [tick(i) for i in range(5)]
    await replay_pages([pages_of("market_data", events)], ["market_data"], to=sink)
    assert seen == [e.event_id for e in events]
