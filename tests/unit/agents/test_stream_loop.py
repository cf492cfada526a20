"""Unit tests for the pure helpers of silvertine_streams.agents.stream_loop: whether a
delivered message is in turn (a redelivery is dropped, a hole is filled first), and
where the group resumes a partition.

Faust's app, consumer and stream event, the pipeline and the hole filler are
stand-ins; the agent loop itself runs in the integration and fault suites.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from silvertine_streams.agents.stream_loop import _committed_offset, _in_turn
from silvertine_streams.domain.offsets import OffsetGuard
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


class Consumer:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Any) -> bool:
        message.acked = True
        self.acked.append(message.offset)
        return True


@dataclass
class Pipeline:
    """Records what it processes and acknowledges each message at once."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    processed: list[tuple[bytes, int, float, int]] = field(default_factory=list)

    async def process(self, value: bytes, state: Any, partition: int, offset: int,
                      ack: Callable[[], object], timestamp: float, lag: int) -> None:
        assert self.lock.locked()  # the expiry timer must not run in between
        assert partition == PARTITION
        self.processed.append((value, offset, timestamp, lag))
        ack()


@dataclass
class Filler:
    records: list[ConsumerRecord[bytes, bytes]]
    asked: list[tuple[str, int, int, int]] = field(default_factory=list)

    async def fetch(self, topic: str, partition: int, start: int, end: int
                    ) -> list[ConsumerRecord[bytes, bytes]]:
        self.asked.append((topic, partition, start, end))
        return [r for r in self.records if start <= r.offset < end]


class StreamEvent:
    def __init__(self, offset: int) -> None:
        self.message = SimpleNamespace(offset=offset, tp=MESSAGE_TP, partition=PARTITION)
        self.acks = 0

    def ack(self) -> None:
        self.acks += 1


def holes_counted() -> float:
    value = REGISTRY.get_sample_value("silvertine_offset_holes_total")
    assert value is not None
    return value


async def in_turn(next_offset: int | None, offset: int, filler: Filler
                  ) -> tuple[bool, OffsetGuard, Pipeline, StreamEvent, Consumer]:
    app = SimpleNamespace(consumer=Consumer())
    pipeline = Pipeline()
    state = SimpleNamespace(offsets=OffsetGuard(next_offset))
    event = StreamEvent(offset)
    go = await _in_turn(app, pipeline, state, event, filler)  # type: ignore[arg-type]
    return go, state.offsets, pipeline, event, app.consumer


async def test_the_expected_message_is_processed() -> None:
    filler = Filler([])
    go, offsets, pipeline, event, _ = await in_turn(5, 5, filler)
    assert go and offsets.next_offset == 6
    assert (event.acks, filler.asked, pipeline.processed) == (0, [], [])


async def test_the_first_message_of_an_unknown_position_is_processed() -> None:
    go, offsets, _, _, _ = await in_turn(None, 40, Filler([]))
    assert go and offsets.next_offset == 41


async def test_a_redelivered_message_is_acknowledged_and_dropped() -> None:
    filler = Filler([])
    go, offsets, pipeline, event, _ = await in_turn(5, 3, filler)
    assert not go
    assert event.acks == 1
    assert offsets.next_offset == 5
    assert (filler.asked, pipeline.processed) == ([], [])


async def test_a_hole_is_read_and_processed_in_order_before_the_message() -> None:
    filler = Filler([record(n) for n in range(0, 12)])
    before = holes_counted()
    go, offsets, pipeline, event, consumer = await in_turn(5, 8, filler)
    assert go
    assert filler.asked == [(TOPIC, PARTITION, 5, 8)]
    assert pipeline.processed == [
        (f"value-{n}".encode(), n, (1_700_000_000_000 + n) / 1000, 0) for n in (5, 6, 7)]
    # Each filled message is acknowledged through Faust's consumer, at its own offset.
    assert consumer.acked == [5, 6, 7]
    assert offsets.next_offset == 9  # the message that jumped comes next
    assert event.acks == 0
    assert holes_counted() == before + 1


async def test_a_hole_read_only_in_part_is_logged_and_the_message_still_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    filler = Filler([record(5)])
    with caplog.at_level(logging.WARNING, logger="silvertine_streams.agents.stream_loop"):
        go, offsets, pipeline, _, consumer = await in_turn(5, 8, filler)
    assert go and offsets.next_offset == 9
    assert [offset for _, offset, _, _ in pipeline.processed] == [5]
    assert consumer.acked == [5]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "read 1 of the 3 missing messages; commits stay before the hole" in errors[0]


def test_the_committed_offset_is_what_faust_recorded_for_the_partition() -> None:
    consumer = SimpleNamespace(_committed_offset={MESSAGE_TP: 17, TP(TOPIC, 0): 3})
    app = SimpleNamespace(consumer=consumer)
    assert _committed_offset(app, MESSAGE_TP) == 17  # type: ignore[arg-type]
    assert _committed_offset(app, TP(TOPIC, 2)) is None  # type: ignore[arg-type]
    # A consumer without the (private) record: unknown, never an error.
    bare = SimpleNamespace(consumer=SimpleNamespace())
    assert _committed_offset(bare, MESSAGE_TP) is None  # type: ignore[arg-type]
