"""A batch of messages through the pipeline: one write, acks only after it, marks before acks.

The sinks are in-memory stand-ins (a pure test of the pipeline's batching and
acknowledgement rules; the real sinks are tested against redis-server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial

import pytest

from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.agents.pipeline import (
    EventPipeline,
    Incoming,
    PartitionState,
    PipelinePolicy,
)
from silvertine_streams.domain.flow import OverloadDetector
from silvertine_streams.domain.reorder import ReorderPolicy
from silvertine_streams.events import (
    EventType,
    MarketDataEvent,
    content_fingerprint,
    encode_event,
)
from silvertine_streams.sinks.canonical_log import LogRecord, WriteStatus
from silvertine_streams.sinks.dead_letters import DeadLetter


class RecordingLog:
    """A log sink that records each write's event ids; writes wait for ``gate`` when set."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def write(self, records: Sequence[LogRecord]) -> list[WriteStatus]:
        if self.gate is not None:
            await self.gate.wait()
        self.writes.append([r.event_id for r in records])
        return [WriteStatus.WRITTEN] * len(records)


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.writes: list[list[str]] = []

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        self.writes.append([letter.reason for letter in letters])


async def _nothing(*_: object) -> None:
    return None


def pipeline(log: RecordingLog, dead: RecordingDeadLetters | None = None, *,
             overflow: str = "block", overloaded: bool = False) -> EventPipeline:
    policy = PipelinePolicy(ReorderPolicy("best_effort", 100, 10.0),
                            overflow=overflow)  # type: ignore[arg-type]  # a valid literal
    outbox = Outbox(dead or RecordingDeadLetters(), _nothing, _nothing)
    overload = OverloadDetector(high_lag=1, low_lag=0) if overloaded else None
    return EventPipeline(EventType.MARKET_DATA, policy, log, outbox,  # type: ignore[arg-type]
                         overload=overload)


def tick(symbol: str, sequence: int) -> MarketDataEvent:
    return MarketDataEvent(symbol=symbol, price=100.0, source="feed", sequence=sequence)


class Batch:
    """Single-event messages for a pipeline, recording the order of acks."""

    def __init__(self, p: EventPipeline) -> None:
        self.p = p
        self.acked: list[tuple[int, int]] = []
        self.marks_at_ack: list[dict[str, int]] = []
        self.states: dict[int, PartitionState] = {}

    def state(self, partition: int) -> PartitionState:
        if partition not in self.states:
            self.states[partition] = self.p.partition(partition, dict)
        return self.states[partition]

    def message(self, partition: int, offset: int, value: bytes) -> Incoming:
        state = self.state(partition)

        def ack() -> None:
            self.acked.append((partition, offset))
            self.marks_at_ack.append(dict(state.durable_marks))

        return Incoming(value, state, partition, offset, ack)


async def test_a_batch_of_single_event_messages_is_one_write_then_every_ack_then_done() -> None:
    log = RecordingLog()
    p = pipeline(log)
    batch = Batch(p)
    events = [tick("AAPL", 1), tick("MSFT", 1), tick("AAPL", 2), tick("MSFT", 2)]
    messages = [batch.message(i % 2, i // 2, encode_event(e)) for i, e in enumerate(events)]
    done: list[list[tuple[int, int]]] = []

    outcome = await p.process_batch(messages, on_done=lambda: done.append(list(batch.acked)))

    assert log.writes == [[e.event_id for e in events]]  # one write, in batch order
    assert sorted(batch.acked) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert done == [batch.acked]  # on_done only after every ack
    assert outcome.logged == 4 and outcome.held == 0


async def test_nothing_is_acknowledged_before_the_write_is_durable() -> None:
    log = RecordingLog()
    log.gate = asyncio.Event()
    p = pipeline(log)
    batch = Batch(p)
    done: list[bool] = []
    processing = asyncio.ensure_future(p.process_batch(
        [batch.message(0, n, encode_event(tick("AAPL", n + 1))) for n in range(3)],
        on_done=lambda: done.append(True)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert batch.acked == [] and done == [] and log.writes == []
    log.gate.set()
    await processing
    assert batch.acked == [(0, 0), (0, 1), (0, 2)] and done == [True]


async def test_marks_count_as_durable_before_the_first_ack_and_are_saved_once() -> None:
    log = RecordingLog()
    p = pipeline(log)
    batch = Batch(p)
    await p.process_batch([batch.message(0, 0, encode_event(tick("AAPL", 1))),
                           batch.message(0, 1, encode_event(tick("AAPL", 2))),
                           batch.message(1, 0, encode_event(tick("MSFT", 7)))])
    # Every ack saw the marks of the whole durable batch of its partition.
    assert batch.marks_at_ack[0] == {"feed/AAPL": 2}
    assert batch.marks_at_ack[-1] == {"feed/MSFT": 7}
    assert sorted(p.dirty_marks()) == [(0, {"feed/AAPL": 2}), (1, {"feed/MSFT": 7})]
    assert p.dirty_marks() == []  # saved: nothing moved since

    await p.process_batch([batch.message(1, 1, encode_event(tick("MSFT", 8)))])
    assert p.dirty_marks() == [(1, {"feed/MSFT": 8})]


async def test_a_held_event_keeps_only_its_own_message_unacknowledged_until_it_leaves() -> None:
    log = RecordingLog()
    p = pipeline(log)
    batch = Batch(p)
    early, missing = tick("AAPL", 3), tick("AAPL", 2)  # 3 overtakes 2: held for it
    outcome = await p.process_batch([batch.message(0, 0, encode_event(tick("AAPL", 1))),
                                     batch.message(0, 1, encode_event(early)),
                                     batch.message(1, 0, encode_event(tick("MSFT", 1)))])
    assert outcome.held == 1
    assert sorted(batch.acked) == [(0, 0), (1, 0)]
    assert p.dirty_marks() == [(0, {"feed/AAPL": 1}), (1, {"feed/MSFT": 1})]

    await p.process_batch([batch.message(0, 2, encode_event(missing))])
    assert log.writes[-1] == [missing.event_id, early.event_id]  # in sequence order
    assert sorted(batch.acked) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert p.dirty_marks() == [(0, {"feed/AAPL": 3})]


async def test_rejects_of_a_whole_batch_are_one_dead_letter_write_before_their_acks() -> None:
    log, dead = RecordingLog(), RecordingDeadLetters()
    p = pipeline(log, dead)
    batch = Batch(p)
    await p.process_batch([batch.message(0, 0, b"not json"),
                           batch.message(0, 1, encode_event(tick("AAPL", 1))),
                           batch.message(0, 2, b'{"event_type":"market_data","price":-1}')])
    assert len(dead.writes) == 1 and len(dead.writes[0]) == 2
    assert len(log.writes) == 1
    assert batch.acked == [(0, 0), (0, 1), (0, 2)]


async def test_under_overload_conflation_applies_to_the_whole_batch_and_is_counted() -> None:
    log = RecordingLog()
    p = pipeline(log, overflow="conflate", overloaded=True)
    batch = Batch(p)
    events = [tick("AAPL", 1), tick("MSFT", 1), tick("AAPL", 2), tick("AAPL", 3)]
    outcome = await p.process_batch(
        [batch.message(0, n, encode_event(e)) for n, e in enumerate(events)], lag=10)
    assert log.writes == [[events[1].event_id, events[3].event_id]]  # the latest per stream
    assert outcome.shed == 2 and outcome.logged == 2
    assert len(batch.acked) == 4  # shed events are accounted for: their messages are done
    assert p.dirty_marks() == [(0, {"feed/AAPL": 3, "feed/MSFT": 1})]


async def test_a_gap_report_is_sent_before_the_ack_and_is_the_same_event_when_redelivered(
) -> None:
    """A crash between the report and the commit redelivers the batch: the report again
    must be an identical event (same id, same content), which the system log keeps once."""
    events = [tick("AAPL", n) for n in (1, 2, 5)]
    reports: list[list[object]] = []
    for _ in range(2):  # the first worker, then the one the batch is redelivered to
        order: list[object] = []

        async def send(report: object, order: list[object] = order) -> None:
            order.append(report)

        policy = PipelinePolicy(ReorderPolicy("best_effort", 100, 0.0))
        p = EventPipeline(EventType.MARKET_DATA, policy, RecordingLog(),  # type: ignore[arg-type]
                          Outbox(RecordingDeadLetters(), send, _nothing))
        state = p.partition(0, dict)
        batch = [Incoming(encode_event(e), state, 0, i, partial(order.append, ("ack", i)))
                 for i, e in enumerate(events)]
        outcome = await p.process_batch(batch)
        assert outcome.gaps == 1
        assert order[-3:] == [("ack", 0), ("ack", 1), ("ack", 2)]
        reports.append([r for r in order if not isinstance(r, tuple)])
    (first,), (again,) = reports
    # What the canonical log compares: the id, and the content (ts_ns and sequence aside).
    assert first.event_id == again.event_id  # type: ignore[attr-defined]
    assert content_fingerprint(first) == content_fingerprint(again)  # type: ignore[arg-type]
    assert first.details["expected"] == 3 and first.details["got"] == 5  # type: ignore[attr-defined]
    assert first.timestamp == events[2].timestamp  # type: ignore[attr-defined]


async def test_a_message_with_its_own_origin_is_named_as_the_ingress_mirror_names_it() -> None:
    # The EventProcessor reads Redis ingress entries: an event sent without an id
    # gets the id the ingress mirror would give it, and its log origin says so.
    from silvertine_streams.handlers.recent import RecentlyLogged

    recent = RecentlyLogged(lambda t: True)
    recent.active = True
    log = RecordingLog()
    policy = PipelinePolicy(ReorderPolicy("best_effort", 100, 10.0))
    p = EventPipeline(EventType.MARKET_DATA, policy, log,  # type: ignore[arg-type]
                      Outbox(RecordingDeadLetters(), _nothing, _nothing), recent=recent)
    state = p.partition(0, dict)
    acked: list[str] = []
    value = b'{"event_type": "market_data", "symbol": "AAPL", "price": 1.5}'
    entry_s = time.time() - 1.0
    await p.process_batch([Incoming(value, state, 0, 0, partial(acked.append, "5-0"),
                                    entry_s, "events:market_data/5000-0")])
    [event] = recent.drain()
    assert event.event_id == "events:market_data/5000-0#0"
    assert event.timestamp.timestamp() == pytest.approx(entry_s)
    assert log.writes == [["events:market_data/5000-0#0"]] and acked == ["5-0"]
    assert recent.drain() == []
