"""Mailboxes between the fetch loop and the batch loops: what a batch takes, bounds, revokes."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from silvertine_streams.agents.intake import Intake, Mailbox


class TP(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    offset: int
    value: bytes


def records(first: int, count: int, size: int = 10) -> list[Record]:
    return [Record(offset, b"x" * size) for offset in range(first, first + count)]


def offsets(batch_records: list[tuple[TP, list[Record]]]) -> dict[int, list[int]]:
    return {tp.partition: [r.offset for r in rs] for tp, rs in batch_records}


def test_a_batch_takes_everything_waiting_in_offset_order() -> None:
    box = Mailbox("md")
    box.put(TP("md", 0), records(0, 3))
    box.put(TP("md", 1), records(10, 2))
    box.put(TP("md", 0), records(3, 2))  # the next fetch of partition 0
    batch = box.take(epoch=7)
    assert batch is not None
    assert batch.epoch == 7 and batch.messages == 7
    assert offsets(batch.records) == {0: [0, 1, 2, 3, 4], 1: [10, 11]}
    assert box.qsize() == 0 and box.take(epoch=7) is None


def test_a_lone_message_is_a_batch_of_one() -> None:
    box = Mailbox("order")
    box.put(TP("order", 2), records(41, 1))
    batch = box.take(epoch=0)
    assert batch is not None and offsets(batch.records) == {2: [41]}


def test_the_message_bound_cuts_a_partition_and_keeps_its_rest_for_the_next_batch() -> None:
    box = Mailbox("md", max_messages=4)
    box.put(TP("md", 0), records(0, 3))
    box.put(TP("md", 1), records(0, 3))
    assert box.full
    first = box.take(epoch=0)
    assert first is not None and offsets(first.records) == {0: [0, 1, 2], 1: [0]}
    assert not box.full and box.qsize() == 2
    second = box.take(epoch=0)
    assert second is not None and offsets(second.records) == {1: [1, 2]}


def test_a_partition_reached_exactly_at_the_bound_is_left_whole_not_taken_empty() -> None:
    box = Mailbox("md", max_messages=3)
    box.put(TP("md", 0), records(0, 3))
    box.put(TP("md", 1), records(0, 2))
    first = box.take(epoch=0)
    assert first is not None
    assert offsets(first.records) == {0: [0, 1, 2]}  # no empty entry for partition 1
    second = box.take(epoch=0)
    assert second is not None and offsets(second.records) == {1: [0, 1]}


def test_the_byte_bound_counts_message_values() -> None:
    box = Mailbox("md", max_bytes=250)
    box.put(TP("md", 0), records(0, 5, size=100))
    assert box.full
    batch = box.take(epoch=0)
    assert batch is not None and offsets(batch.records) == {0: [0, 1, 2]}
    assert box.qsize() == 2 and not box.full


def test_only_full_mailboxes_leave_their_partitions_out_of_the_next_fetch() -> None:
    orders, market_data = Mailbox("order"), Mailbox("md", max_messages=2)
    intake = Intake([orders, market_data])
    active = {TP("order", 0), TP("md", 0), TP("md", 1), TP("changelog", 0)}
    assert intake.fetchable(active) == active
    market_data.put(TP("md", 0), records(0, 2))
    assert intake.fetchable(active) == {TP("order", 0), TP("changelog", 0)}


def test_delivery_keeps_other_topics_for_faust_and_fills_critical_mailboxes_first() -> None:
    orders, market_data = Mailbox("order"), Mailbox("md")
    intake = Intake([orders, market_data])
    woken: list[str] = []

    async def scenario() -> None:
        async def loop(box: Mailbox) -> None:
            await box.wait()
            woken.append(box.topic)

        tasks = [asyncio.ensure_future(loop(market_data)), asyncio.ensure_future(loop(orders))]
        await asyncio.sleep(0)
        others = intake.deliver({TP("md", 0): records(0, 2), TP("changelog", 1): records(5, 1),
                                 TP("order", 3): records(9, 1)})
        assert list(others) == [TP("changelog", 1)]
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert woken == ["order", "md"]
    assert orders.qsize() == 1 and market_data.qsize() == 2


def test_a_revoke_drops_what_waits_for_the_partitions_and_starts_a_new_epoch() -> None:
    box = Mailbox("md")
    intake = Intake([box])
    box.put(TP("md", 0), records(0, 3))
    box.put(TP("md", 1), records(0, 2))
    intake.revoke([TP("md", 0)])
    assert intake.epoch == 1
    batch = box.take(intake.epoch)
    assert batch is not None and batch.epoch == 1 and offsets(batch.records) == {1: [0, 1]}
    intake.revoke([TP("md", 1)])
    assert box.qsize() == 0 and not box.full


def test_the_fetch_loop_waiting_for_room_wakes_when_a_batch_is_taken() -> None:
    box = Mailbox("md", max_messages=1)
    intake = Intake([box])
    box.put(TP("md", 0), records(0, 1))

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiter = asyncio.ensure_future(intake.wait_for_room(timeout_s=5.0))
        await asyncio.sleep(0)
        assert not waiter.done()
        box.take(epoch=0)
        await waiter
        return loop.time() - started

    assert asyncio.run(scenario()) < 1.0
