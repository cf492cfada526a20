"""Long envelopes give the event loop back every SLICE_EVENTS events (lower lanes).

In-memory stand-in sinks: a pure test of where the pipeline yields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from silvertine_streams.agents.pipeline import SLICE_EVENTS, EventPipeline, PipelinePolicy
from silvertine_streams.domain.reorder import ReorderPolicy
from silvertine_streams.events import EventType, MarketDataEvent, encode_batch
from silvertine_streams.sinks.canonical_log import LogRecord, WriteStatus


class InstantLog:
    def __init__(self) -> None:
        self.written: list[str] = []

    async def write(self, records: Sequence[LogRecord]) -> list[WriteStatus]:
        self.written.extend(r.event_id for r in records)
        return [WriteStatus.WRITTEN] * len(records)


async def _nothing(*_: object) -> None:
    return None


def envelope(count: int) -> tuple[bytes, list[str]]:
    events = [MarketDataEvent(symbol="AAPL", price=100.0, source="feed", sequence=n)
              for n in range(1, count + 1)]
    return encode_batch(events), [e.event_id for e in events]


async def test_a_long_envelope_breaks_every_slice_and_other_tasks_run_in_between() -> None:
    log = InstantLog()
    seen_at_breaks: list[int] = []
    other_ran: list[int] = []

    async def slice_break() -> None:
        seen_at_breaks.append(len(other_ran))
        await asyncio.sleep(0)  # what LaneController.slice_break does first

    async def other_agent() -> None:
        for _ in range(10):
            other_ran.append(1)
            await asyncio.sleep(0)

    policy = PipelinePolicy(ReorderPolicy("best_effort", 100, 0.05))
    pipeline = EventPipeline(EventType.MARKET_DATA, policy, log, None,  # type: ignore[arg-type]
                             None, _nothing, _nothing, slice_break=slice_break)
    state = pipeline.partition(0, dict)
    data, ids = envelope(2 * SLICE_EVENTS + 50)
    acked: list[int] = []
    other = asyncio.ensure_future(other_agent())
    await pipeline.process(data, state, 0, 0, lambda: acked.append(0))
    await other

    assert len(seen_at_breaks) == 2  # after events 100 and 200 of 250
    assert seen_at_breaks[-1] > 0, "no other task ran inside the envelope"
    assert log.written == ids and acked == [0]  # one write, in order, then the ack


async def test_without_a_slice_break_an_envelope_runs_in_one_stretch() -> None:
    log = InstantLog()
    policy = PipelinePolicy(ReorderPolicy("best_effort", 100, 0.05))
    pipeline = EventPipeline(EventType.MARKET_DATA, policy, log, None,  # type: ignore[arg-type]
                             None, _nothing, _nothing)
    state = pipeline.partition(0, dict)
    data, ids = envelope(2 * SLICE_EVENTS + 50)
    other_ran: list[int] = []

    async def other_agent() -> None:
        other_ran.append(1)

    other = asyncio.ensure_future(other_agent())
    await pipeline.process(data, state, 0, 0, lambda: None)
    # The only awaits before the write are the sink's: the other task ran no earlier
    # than the write (an instant sink does not yield, so it has not run at all yet).
    assert other_ran == [] and log.written == ids
    await other
