"""Unit tests for silvertine_streams.agents.batch_loop: how a taken batch becomes pipeline
input (a redelivery is skipped, a hole is read and processed first, in the same batch;
acks go to Faust's bookkeeping with the batch's epoch) and where a partition resumes.

Faust's app and consumer, the pipeline and the hole filler are stand-ins; the loop
itself runs in the integration and fault suites.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from silvertine_streams.agents.batch_loop import BatchLoop, _committed_offset
from silvertine_streams.agents.fetch_loop import BatchInProgress
from silvertine_streams.agents.intake import Batch, Intake, Mailbox
from silvertine_streams.agents.lanes import LaneController
from silvertine_streams.agents.pipeline import Incoming
from silvertine_streams.domain.offsets import OffsetGuard
from silvertine_streams.events import EventType
from silvertine_streams.observability.memory import MemoryGuard
from silvertine_streams.observability.metrics import REGISTRY

TOPIC = "silvertine.order"
PARTITION = 1
MESSAGE_TP = TP(TOPIC, PARTITION)


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TOPIC, partition=PARTITION, offset=offset, timestamp=1_700_000_000_000 + offset,
        timestamp_type=0, key=b"AAPL", value=f"value-{offset}".encode(), checksum=None,
        serialized_key_size=4, serialized_value_size=7, headers=[],
    )


@dataclass
class Pipeline:
    """Records the batches it is given and acknowledges every message at once."""

    next_offset: int | None
    event_type: EventType = EventType.ORDER
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    batches: list[tuple[list[Incoming], int]] = field(default_factory=list)
    state: Any = None

    def partition(self, partition: int, restore: Callable[[], dict[str, int]],
                  first_offset: Callable[[], int | None], tp: Any) -> Any:
        if self.state is None:
            self.state = SimpleNamespace(offsets=OffsetGuard(self.next_offset))
        return self.state

    async def process_batch(self, messages: Sequence[Incoming], lag: int,
                            on_done: Callable[[], object]) -> Any:
        assert self.lock.locked()  # the expiry timer must not run in between
        self.batches.append((list(messages), lag))
        for message in messages:
            message.ack()
        on_done()
        return SimpleNamespace(held=0)


@dataclass
class Filler:
    records: list[ConsumerRecord[bytes, bytes]]
    asked: list[tuple[str, int, int, int]] = field(default_factory=list)

    async def fetch(self, topic: str, partition: int, start: int, end: int
                    ) -> list[ConsumerRecord[bytes, bytes]]:
        self.asked.append((topic, partition, start, end))
        return [r for r in self.records if start <= r.offset < end]


class Book:
    """A ConsumerBook stand-in recording acks as ``(offset, epoch)``."""

    def __init__(self) -> None:
        self.acked: list[tuple[int, int]] = []
        self.ended: list[BatchInProgress] = []

    def ack(self, tp: Any, offset: int, epoch: int) -> None:
        assert tp == MESSAGE_TP
        self.acked.append((offset, epoch))

    def end(self, token: BatchInProgress) -> None:
        self.ended.append(token)


def holes_counted() -> float:
    value = REGISTRY.get_sample_value("silvertine_offset_holes_total")
    return value or 0.0


async def run_batch(next_offset: int | None, offsets: list[int], filler: Filler,
                    highwater: int = 100) -> tuple[Pipeline, Book]:
    consumer = SimpleNamespace(_committed_offset={}, highwater=lambda tp: highwater)
    app = SimpleNamespace(consumer=consumer)
    pipeline = Pipeline(next_offset)
    mailbox = Mailbox(TOPIC)
    loop = BatchLoop(app, pipeline, mailbox, Intake([mailbox]), {},  # type: ignore[arg-type]
                     LaneController(0.05), True, MemoryGuard(0), filler)  # type: ignore[arg-type]
    book = Book()
    batch = Batch(epoch=3, records=[(MESSAGE_TP, [record(o) for o in offsets])],
                  messages=len(offsets))
    token = BatchInProgress(len(offsets))
    await loop._process(batch, book, token)  # type: ignore[arg-type]
    assert book.ended == [token]  # the batch no longer counts as in progress
    return pipeline, book


async def test_in_turn_messages_go_as_one_batch_with_their_own_acks() -> None:
    pipeline, book = await run_batch(5, [5, 6, 7], Filler([]), highwater=10)
    [(messages, backlog)] = pipeline.batches
    assert [(m.offset, m.value, m.timestamp_s) for m in messages] == [
        (n, f"value-{n}".encode(), (1_700_000_000_000 + n) / 1000) for n in (5, 6, 7)]
    assert backlog == 10 - 5 - 1  # messages behind the batch's first one
    assert book.acked == [(5, 3), (6, 3), (7, 3)]  # each at its offset, with the batch's epoch
    assert pipeline.state.offsets.next_offset == 8


async def test_redelivered_messages_are_skipped_and_a_batch_of_only_those_is_done() -> None:
    pipeline, book = await run_batch(5, [3, 4], Filler([]))
    assert pipeline.batches == [] and book.acked == []
    pipeline, book = await run_batch(5, [4, 5], Filler([]))
    assert [m.offset for m in pipeline.batches[0][0]] == [5]


async def test_a_hole_is_read_and_processed_first_in_the_same_batch() -> None:
    filler = Filler([record(n) for n in range(0, 12)])
    before = holes_counted()
    pipeline, book = await run_batch(5, [8, 9], filler)
    assert filler.asked == [(TOPIC, PARTITION, 5, 8)]
    assert [m.offset for m in pipeline.batches[0][0]] == [5, 6, 7, 8, 9]
    assert [offset for offset, _ in book.acked] == [5, 6, 7, 8, 9]
    assert pipeline.state.offsets.next_offset == 10
    assert holes_counted() == before + 1


async def test_a_hole_read_only_in_part_is_logged_and_the_batch_still_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="silvertine_streams.agents.batch_loop"):
        pipeline, _ = await run_batch(5, [8], Filler([record(5)]))
    assert [m.offset for m in pipeline.batches[0][0]] == [5, 8]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "read 1 of the 3 missing messages; commits stay before the hole" in errors[0]


def test_the_committed_offset_is_what_faust_recorded_for_the_partition() -> None:
    consumer = SimpleNamespace(_committed_offset={MESSAGE_TP: 17, TP(TOPIC, 0): 3})
    assert _committed_offset(consumer, MESSAGE_TP) == 17
    assert _committed_offset(consumer, TP(TOPIC, 2)) is None
    # A consumer without the (private) record: unknown, never an error.
    assert _committed_offset(SimpleNamespace(), MESSAGE_TP) is None

