"""Fetched records on their way from the consumer to each event type's batch loop.

The consumer's fetch loop (:mod:`~silvertine_streams.agents.fetch_loop`) puts
every record of our event topics into its topic's :class:`Mailbox` and goes on
fetching; the type's batch loop takes *everything* waiting as its next batch
(up to a bound). Nothing waits for a timer: a lone message is a batch of one,
and under load batches grow by themselves while the previous one is written.

Bounds: a batch holds at most ``max_messages`` messages and about
``max_bytes`` bytes; while a mailbox holds that much, its partitions are left
out of the next fetches (aiokafka keeps their fetched records, and fetches no
more of a partition that is not drained): backpressure per event type, so a
slow market-data sink does not hold orders back.

No Faust here: records are whatever the consumer fetched (``.value``,
``.offset``), topic-partitions anything with ``.topic``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

BATCH_MAX_MESSAGES = 5_000
"""Messages per batch at most (the log sink splits a call above 5,000 events anyway)."""
BATCH_MAX_BYTES = 1 << 20
"""Bytes of message values per batch, about (~4,000 single events or 8 envelopes of 500)."""


class Batch(NamedTuple):
    """Records of one event topic taken together.

    Attributes:
        epoch: the intake's revocation count when the records were delivered;
            acknowledgements of an older epoch are void (the partitions moved).
        records: per topic-partition, its records in offset order.
        messages: how many records.
    """

    epoch: int
    records: list[tuple[Any, list[Any]]]
    messages: int


class Mailbox:
    """The records of one event topic fetched but not yet taken by its batch loop.

    ``qsize()`` counts waiting messages, so a critical lane's mailbox can be
    watched by :class:`~silvertine_streams.agents.lanes.LaneController`.
    """

    def __init__(self, topic: str, max_messages: int = BATCH_MAX_MESSAGES,
                 max_bytes: int = BATCH_MAX_BYTES) -> None:
        self.topic = topic
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._pending: dict[Any, list[Any]] = {}
        self._messages = 0
        self._bytes = 0
        self._ready = asyncio.Event()
        self.on_taken: list[asyncio.Event] = []
        """Set whenever records are taken (the fetch loop waits on it while full)."""

    def qsize(self) -> int:
        """Messages waiting."""
        return self._messages

    @property
    def full(self) -> bool:
        """Whether a whole batch is waiting (then its partitions are not fetched)."""
        return self._messages >= self.max_messages or self._bytes >= self.max_bytes

    def put(self, tp: Any, records: Sequence[Any]) -> None:
        """Add a partition's fetched records (in offset order, after those waiting)."""
        if not records:
            return
        waiting = self._pending.get(tp)
        if waiting is None:
            self._pending[tp] = list(records)
        else:
            waiting.extend(records)
        self._messages += len(records)
        self._bytes += sum(len(r.value or b"") for r in records)
        self._ready.set()

    def take(self, epoch: int) -> Batch | None:
        """Take what is waiting, up to one batch's bounds (None when nothing waits).

        A partition's records are taken from its oldest; a partition cut short
        by the bounds keeps the rest for the next batch.
        """
        if not self._messages:
            return None
        taken: list[tuple[Any, list[Any]]] = []
        count = size = 0
        for tp in list(self._pending):
            if count >= self.max_messages or size >= self.max_bytes:
                break
            records = self._pending[tp]
            cut = 0
            while cut < len(records) and count < self.max_messages and size < self.max_bytes:
                size += len(records[cut].value or b"")
                count += 1
                cut += 1
            if cut == len(records):
                del self._pending[tp]
                taken.append((tp, records))
            else:
                self._pending[tp] = records[cut:]
                taken.append((tp, records[:cut]))
                break
        self._messages -= count
        self._bytes = max(0, self._bytes - size) if self._messages else 0
        if not self._messages:
            self._ready.clear()
        for event in self.on_taken:
            event.set()
        return Batch(epoch, taken, count)

    async def wait(self) -> None:
        """Wait until something is waiting."""
        while not self._messages:
            await self._ready.wait()

    def drop(self, tps: Iterable[Any]) -> int:
        """Forget what waits for ``tps`` (revoked); return how many messages went."""
        dropped = 0
        for tp in tps:
            records = self._pending.pop(tp, None)
            if records:
                dropped += len(records)
                self._bytes -= sum(len(r.value or b"") for r in records)
        self._messages -= dropped
        if not self._messages:
            self._bytes = 0
            self._ready.clear()
        return dropped


class Intake:
    """Every consumed event topic's :class:`Mailbox`, as the fetch loop sees them.

    Args:
        mailboxes: one per event topic, critical lanes first: delivered
            records wake the loops in this order.
    """

    def __init__(self, mailboxes: Sequence[Mailbox]) -> None:
        self.mailboxes = {box.topic: box for box in mailboxes}
        self.epoch = 0
        """Revocations so far: acks of batches delivered before the last one are void."""
        self._room = asyncio.Event()
        for box in mailboxes:
            box.on_taken.append(self._room)

    def owns(self, topic: str) -> bool:
        """Whether ``topic`` is one of ours (else Faust's own path handles it)."""
        return topic in self.mailboxes

    def fetchable(self, active: Iterable[Any]) -> set[Any]:
        """The active partitions worth fetching now: those whose mailbox is not full."""
        full = {topic for topic, box in self.mailboxes.items() if box.full}
        return {tp for tp in active if tp.topic not in full}

    def deliver(self, records: Mapping[Any, Sequence[Any]]) -> dict[Any, Sequence[Any]]:
        """Put our topics' records into their mailboxes; return the others' records."""
        others: dict[Any, Sequence[Any]] = {}
        ours: dict[str, list[tuple[Any, Sequence[Any]]]] = {}
        for tp, batch in records.items():
            if tp.topic in self.mailboxes:
                ours.setdefault(tp.topic, []).append((tp, batch))
            else:
                others[tp] = batch
        for topic, box in self.mailboxes.items():  # critical lanes first
            for tp, batch in ours.get(topic, ()):
                box.put(tp, batch)
        return others

    def revoke(self, tps: Iterable[Any]) -> None:
        """Partitions are being revoked: forget what waits for them, void older acks."""
        self.epoch += 1
        tps = list(tps)
        for box in self.mailboxes.values():
            box.drop(tps)
        self._room.set()

    async def wait_for_room(self, timeout_s: float) -> None:
        """Wait until a batch loop takes records (or ``timeout_s`` passes)."""
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), timeout_s)
