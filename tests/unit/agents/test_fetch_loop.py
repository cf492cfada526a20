"""Our batches in Faust's offset bookkeeping: acks, batches in progress, revokes.

The consumer here is a stand-in holding the structures Faust's consumer keeps
(``_acked``, ``_acked_index``, ``_committed_offset``, ``_n_acked``,
``_unacked_messages``, ``_waiting_for_ack``); the real consumer is exercised
by the integration and fault tests.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any
from weakref import WeakSet

from silvertine_streams.agents.fetch_loop import ConsumerBook
from silvertine_streams.agents.intake import Intake, Mailbox

TP = ("silvertine.market_data", 0)


class StandInConsumer:
    def __init__(self) -> None:
        self._acked: defaultdict[Any, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[Any, set[int]] = defaultdict(set)
        self._committed_offset: defaultdict[Any, int | None] = defaultdict(lambda: None)
        self._n_acked = 0
        self._unacked_messages: WeakSet[Any] = WeakSet()
        self._waiting_for_ack: asyncio.Future[None] | None = None


def book() -> tuple[ConsumerBook, StandInConsumer, Intake]:
    consumer = StandInConsumer()
    intake = Intake([Mailbox("silvertine.market_data")])
    return ConsumerBook(consumer, intake), consumer, intake


def test_an_ack_marks_the_offset_committable_once() -> None:
    acks, consumer, intake = book()
    acks.ack(TP, 5, intake.epoch)
    acks.ack(TP, 6, intake.epoch)
    acks.ack(TP, 5, intake.epoch)  # twice: counted once
    assert consumer._acked[TP] == [5, 6]
    assert consumer._acked_index[TP] == {5, 6}
    assert consumer._n_acked == 2


def test_acks_below_the_committed_offset_are_ignored() -> None:
    acks, consumer, intake = book()
    consumer._committed_offset[TP] = 10
    acks.ack(TP, 9, intake.epoch)
    acks.ack(TP, 10, intake.epoch)
    assert consumer._acked[TP] == [10]


def test_acks_of_a_batch_delivered_before_a_revoke_are_void() -> None:
    acks, consumer, intake = book()
    epoch = intake.epoch
    intake.revoke([TP])
    acks.ack(TP, 3, epoch)
    assert consumer._acked[TP] == [] and consumer._n_acked == 0
    acks.ack(TP, 3, intake.epoch)
    assert consumer._acked[TP] == [3]


def test_a_batch_in_progress_is_waited_for_until_it_ends() -> None:
    acks, consumer, _ = book()

    async def scenario() -> None:
        token = acks.begin(messages=7)
        assert set(consumer._unacked_messages) == {token}
        assert not token.acked and token.refcount == 1  # what Faust's wait_empty reads
        consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
        acks.end(token)
        assert consumer._waiting_for_ack.done()  # wait_empty wakes up at once
        assert token.acked and len(consumer._unacked_messages) == 0
        acks.end(token)  # ending twice (an error path after on_done) is harmless

    asyncio.run(scenario())
