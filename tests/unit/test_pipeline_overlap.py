"""Overlapped log writes: decode the next message while one write is in flight.

The sinks here are in-memory stand-ins (a pure test of the pipeline's ordering
and acknowledgement rules; the real sinks are tested against redis-server).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from silvertine_streams.agents.pipeline import EventPipeline, PipelinePolicy
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


class NoDeadLetters:
    async def write(self, letters: Sequence[DeadLetter]) -> None:
        raise AssertionError(f"unexpected dead letters: {letters}")


async def _nothing(*_: object) -> None:
    return None


def pipeline(log: GatedLog, overlap: bool) -> EventPipeline:
    policy = PipelinePolicy(ReorderPolicy("best_effort", 100, 0.05), overlap_writes=overlap)
    return EventPipeline(EventType.MARKET_DATA, policy, log, NoDeadLetters(),  # type: ignore[arg-type]
                         None, _nothing, _nothing)


def envelope(first_sequence: int) -> tuple[bytes, list[str]]:
    events = [MarketDataEvent(symbol="AAPL", price=100.0, source="feed", sequence=n)
              for n in range(first_sequence, first_sequence + 3)]
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
