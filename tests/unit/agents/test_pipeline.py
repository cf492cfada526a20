"""When the pipeline gives the event loop back: overlapped log writes (decode
the next message while one write is in flight) and envelope slices (other agents
run inside a long envelope).

The sinks here are in-memory stand-ins (a pure test of the pipeline's ordering
and acknowledgement rules; the real sinks are tested against redis-server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.agents.pipeline import SLICE_EVENTS, EventPipeline, PipelinePolicy
from silvertine_streams.domain.reorder import ReorderPolicy
from silvertine_streams.events import EventType, MarketDataEvent, encode_batch
from silvertine_streams.sinks.canonical_log import LogRecord, WriteStatus
from silvertine_streams.sinks.dead_letters import DeadLetter


class GatedLog:
    """A log sink whose writes finish only when the test opens their gate."""

    def __init__(self) -> None:
        self.started: list[list[str]] = []  # event ids of each write, in start order
        self.finished: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.raise_on_write: BaseException | None = None

    async def write(self, records: Sequence[LogRecord]) -> list[WriteStatus]:
        ids = [r.event_id for r in records]
        self.started.append(ids)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.raise_on_write is not None:
            raise self.raise_on_write
        self.finished.append(ids)
        return [WriteStatus.WRITTEN] * len(records)


class InstantLog:
    """A log sink whose writes finish at once (without giving the loop back)."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def write(self, records: Sequence[LogRecord]) -> list[WriteStatus]:
        self.written.extend(r.event_id for r in records)
        return [WriteStatus.WRITTEN] * len(records)


class NoDeadLetters:
    async def write(self, letters: Sequence[DeadLetter]) -> None:
        raise AssertionError(f"unexpected dead letters: {letters}")


async def _nothing(*_: object) -> None:
    return None


def pipeline(log: GatedLog | InstantLog, overlap: bool = False,
             slice_break: Callable[[], Awaitable[None]] | None = None) -> EventPipeline:
    policy = PipelinePolicy(ReorderPolicy("best_effort", 100, 0.05), overlap_writes=overlap)
    outbox = Outbox(NoDeadLetters(), _nothing, _nothing)
    return EventPipeline(EventType.MARKET_DATA, policy, log, outbox,  # type: ignore[arg-type]
                         slice_break=slice_break)


def envelope(first_sequence: int, count: int = 3) -> tuple[bytes, list[str]]:
    events = [MarketDataEvent(symbol="AAPL", price=100.0, source="feed", sequence=n)
              for n in range(first_sequence, first_sequence + count)]
    return encode_batch(events), [e.event_id for e in events]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_next_message_is_decoded_while_the_write_is_in_flight_and_acked_after() -> None:
    log = GatedLog()
    p = pipeline(log, overlap=True)
    state = p.partition(0, dict)
    acked: list[int] = []
    first, first_ids = envelope(1)
    second, second_ids = envelope(4)

    await p.process(first, state, 0, 0, lambda: acked.append(0))
    await settle()
    assert log.started == [first_ids] and acked == []  # in flight, not acknowledged

    # The second message is decoded and sequenced now, but not written before the first.
    processing = asyncio.ensure_future(p.process(second, state, 0, 1, lambda: acked.append(1)))
    await settle()
    assert not processing.done() and log.started == [first_ids]
    assert state.tracker.high_water("feed/AAPL") == 6

    log.gates[0].set()
    await processing  # returns once the first write is durable and the second is sent
    await settle()
    assert acked == [0] and log.started == [first_ids, second_ids]
    log.gates[1].set()
    await p.flush()
    assert acked == [0, 1] and log.finished == [first_ids, second_ids]


async def test_without_overlap_process_returns_only_once_its_write_is_durable() -> None:
    log = GatedLog()
    p = pipeline(log, overlap=False)
    state = p.partition(0, dict)
    acked: list[int] = []
    first, _ = envelope(1)
    processing = asyncio.ensure_future(p.process(first, state, 0, 0, lambda: acked.append(0)))
    await settle()
    assert not processing.done() and acked == []
    log.gates[0].set()
    await processing
    assert acked == [0]


async def test_a_failed_overlapped_write_surfaces_at_the_next_message_unacknowledged() -> None:
    log = GatedLog()
    log.raise_on_write = RuntimeError("sink bug")
    p = pipeline(log, overlap=True)
    state = p.partition(0, dict)
    acked: list[int] = []
    first, _ = envelope(1)
    second, _ = envelope(4)
    await p.process(first, state, 0, 0, lambda: acked.append(0))
    await settle()
    log.gates[0].set()
    with pytest.raises(RuntimeError, match="sink bug"):
        await p.process(second, state, 0, 1, lambda: acked.append(1))
    assert acked == [] and len(log.started) == 1  # nothing acknowledged, nothing reordered


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

    p = pipeline(log, slice_break=slice_break)
    state = p.partition(0, dict)
    data, ids = envelope(1, 2 * SLICE_EVENTS + 50)
    acked: list[int] = []
    other = asyncio.ensure_future(other_agent())
    await p.process(data, state, 0, 0, lambda: acked.append(0))
    await other

    assert len(seen_at_breaks) == 2  # after events 100 and 200 of 250
    assert seen_at_breaks[-1] > 0, "no other task ran inside the envelope"
    assert log.written == ids and acked == [0]  # one write, in order, then the ack


async def test_without_a_slice_break_an_envelope_runs_in_one_stretch() -> None:
    log = InstantLog()
    p = pipeline(log)
    state = p.partition(0, dict)
    data, ids = envelope(1, 2 * SLICE_EVENTS + 50)
    other_ran: list[int] = []

    async def other_agent() -> None:
        other_ran.append(1)

    other = asyncio.ensure_future(other_agent())
    await p.process(data, state, 0, 0, lambda: None)
    # The only awaits before the write are the sink's: the other task ran no earlier
    # than the write (an instant sink does not yield, so it has not run at all yet).
    assert other_ran == [] and log.written == ids
    await other
