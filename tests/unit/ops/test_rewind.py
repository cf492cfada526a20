"""Rewind's pure parts: target parsing, the offset search, the dedupe-window guard.

The offset search runs against a fake consumer holding record timestamps, which
can answer offsets-for-times correctly (as Kafka) or wrongly (as Tansu 0.6 does).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

import silvertine_streams.ops.rewind as rewind_module
from silvertine_streams.ops.rewind import (
    PartitionRewind,
    RewindPlan,
    RewindRefused,
    parse_rewind_target,
)

TP = TopicPartition("silvertine.order", 0)


class FakeConsumer:
    """Records at offsets 0..n-1 with the given timestamps (ms)."""

    def __init__(self, timestamps: list[int], answer: str = "kafka") -> None:
        self.timestamps = timestamps
        self.answer = answer
        self.position = 0
        self.fetches = 0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset

    async def getmany(self, tp: TopicPartition, timeout_ms: int, max_records: int) -> Any:
        self.fetches += 1
        offset = self.position
        return {tp: [SimpleNamespace(offset=offset, timestamp=self.timestamps[offset])]}

    async def offsets_for_times(self, query: dict[TopicPartition, int]) -> Any:
        ts = query[TP]
        if self.answer == "tansu":  # a time after the last record answers offset 0
            later = [o for o, t in enumerate(self.timestamps) if t >= ts]
            offset = later[0] if later else 0
            return {TP: SimpleNamespace(offset=offset, timestamp=-1)}
        later = [o for o, t in enumerate(self.timestamps) if t >= ts]
        return {TP: SimpleNamespace(offset=later[0], timestamp=self.timestamps[later[0]])
                if later else None}


STAMPS = [1000, 1000, 1010, 1020, 1020, 1020, 1050, 1100]


@pytest.mark.parametrize(("ts", "expected"), [
    (0, 0), (1000, 0), (1001, 2), (1020, 3), (1021, 6), (1100, 7), (1101, 8), (99_999, 8),
])
@pytest.mark.parametrize("broker", ["kafka", "tansu"])
async def test_offset_for_time_is_the_first_record_at_or_after(ts: int, expected: int,
                                                               broker: str) -> None:
    consumer = FakeConsumer(STAMPS, broker)
    offset, method = await rewind_module._offset_for_time(
        consumer, TP, ts, 0, len(STAMPS))  # type: ignore[arg-type]  # a fake consumer
    assert offset == expected
    if broker == "kafka":
        assert method == "broker index (verified)"


async def test_a_wrong_broker_answer_is_searched_in_log_n_fetches() -> None:
    stamps = list(range(0, 100_000, 10))  # 10,000 records
    consumer = FakeConsumer(stamps, "tansu")
    offset, method = await rewind_module._offset_for_time(
        consumer, TP, 10**9, 0, len(stamps))  # type: ignore[arg-type]
    assert offset == len(stamps)
    assert method.startswith("searched (broker answered 0)")
    assert consumer.fetches <= 20


def test_parse_target() -> None:
    assert parse_rewind_target("earliest") == "earliest"
    assert parse_rewind_target(" LATEST ") == "latest"
    assert parse_rewind_target("2025-03-01T14:30:00Z") == datetime(2025, 3, 1, 14, 30, tzinfo=UTC)
    with pytest.raises(RewindRefused, match="earliest, latest or an ISO time"):
        parse_rewind_target("yesterday")


def test_partition_counts() -> None:
    row = PartitionRewind("t", 0, committed=40, target=10, beginning=0, end=50, method="x")
    assert (row.to_reprocess, row.skipped) == (40, 0)
    ahead = PartitionRewind("t", 0, committed=10, target=50, beginning=0, end=50, method="x")
    assert (ahead.to_reprocess, ahead.skipped) == (0, 40)


def test_reprocessing_beyond_the_dedupe_window_needs_consent() -> None:
    old_ms = int((time.time() - 7200) * 1000)
    plan = RewindPlan("g", "earliest", [PartitionRewind("t", 0, 5, 0, 0, 9, "earliest", old_ms)])
    rewind_module._check_dedupe_window(plan, 10_000.0, allowed=False)  # 2 h < 2.8 h: fine
    with pytest.raises(RewindRefused, match="beyond the dedupe window"):
        rewind_module._check_dedupe_window(plan, 3600.0, allowed=False)
    rewind_module._check_dedupe_window(plan, 3600.0, allowed=True)
    assert plan.notes and plan.notes[0].startswith("WARNING")
