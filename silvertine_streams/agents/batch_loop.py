"""One event type's batch loop: everything fetched for its partitions, through the pipeline at once.

The unit of work is a batch of whatever was fetched, not a Kafka message
(DESIGN §5: Faust's per-message machinery capped a worker near 5k messages/s,
and single-event messages ran at ~1.5k events/s). The consumer's fetch loop
(:mod:`~silvertine_streams.agents.fetch_loop`) puts each fetch's records into
the type's :class:`~silvertine_streams.agents.intake.Mailbox`; this loop takes
all that waits as one batch and runs it through
:meth:`~silvertine_streams.agents.pipeline.EventPipeline.process_batch`: one
dead-letter write, one log write, then the acknowledgements, then handlers.

* **Adaptive, no timer.** A lone message is a batch of one; while a batch is
  written, the next fetches pile up in the mailbox and become the next batch.
  Latency at low rates is one message's; at high rates the per-batch costs
  (the Lua call, Redis' fsync, the table write) are shared.
* **Lanes.** Each type has its own loop (an app task), so an order is never
  held to fill a batch nor queued behind market data: the fetch loop delivers
  critical mailboxes first, a lower lane steps aside before each batch while
  critical work is waiting, and yields every ``SLICE_EVENTS`` events inside
  one (:mod:`~silvertine_streams.agents.lanes`).
* **Offsets.** A redelivered message (below the partition's next offset) is
  skipped; a jump past undelivered offsets is filled by reading them directly
  (:mod:`~silvertine_streams.agents.holes`) and processed first, in the same
  batch.
* **Sequence table.** Marks of durable events are saved to the table once per
  changed partition right before Faust commits offsets (:meth:`save_marks`,
  called from the consumer), never per message: the table is a cache of the
  log, and marks written before the commit never lag a committed offset.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from silvertine_streams.agents.fetch_loop import BatchInProgress, ConsumerBook
from silvertine_streams.agents.holes import HoleFiller
from silvertine_streams.agents.intake import Batch, Intake, Mailbox
from silvertine_streams.agents.lanes import LaneController
from silvertine_streams.agents.pipeline import EventPipeline, Incoming, PartitionState
from silvertine_streams.domain.offsets import OffsetAction
from silvertine_streams.observability.memory import MemoryGuard
from silvertine_streams.observability.metrics import MEMORY_THROTTLED, OFFSET_HOLES, TypeMetrics
from silvertine_streams.tables import save_marks_from_batch, stored_marks

if TYPE_CHECKING:
    from silvertine_streams.app import SilvertineApp

log = logging.getLogger(__name__)


class BatchLoop:
    """Feeds one event type's pipeline from its mailbox, a batch at a time.

    Args:
        app: the Faust app (its consumer keeps the offset bookkeeping).
        pipeline: the type's pipeline.
        mailbox: where the fetch loop leaves this type's records.
        intake: every mailbox (its ``epoch`` voids acks across revokes).
        table: the type's sequence table.
        controller: lets critical lanes pre-empt lower ones.
        critical: whether this type is in the critical lane.
        memory: slows intake near the worker's RSS limit.
        filler: reads offsets the consumer skipped.
    """

    def __init__(self, app: SilvertineApp, pipeline: EventPipeline, mailbox: Mailbox,
                 intake: Intake, table: Any, controller: LaneController, critical: bool,
                 memory: MemoryGuard, filler: HoleFiller) -> None:
        self._app = app
        self.pipeline = pipeline
        self.mailbox = mailbox
        self._intake = intake
        self._table = table
        self._controller = controller
        self._critical = critical
        self._memory = memory
        self._filler = filler
        self._metrics = TypeMetrics.for_type(pipeline.event_type.value)
        self._open: set[BatchInProgress] = set()
        if critical:
            controller.watch(mailbox)

    async def run(self) -> None:
        """Take and process batches until the app stops (an app task)."""
        consumer: Any = self._app.consumer  # Faust's Consumer, beyond its ConsumerT interface
        book = ConsumerBook(consumer, self._intake)
        mailbox = self.mailbox
        while True:
            await mailbox.wait()
            if not consumer.flow_active:
                # Stopped for a rebalance (a revoke drops what waits) or for good
                # (the app cancels this task once the consumer is done).
                await consumer.can_resume_flow.wait()
                continue
            batch = mailbox.take(self._intake.epoch)
            if batch is None:
                continue
            token = book.begin(batch.messages)
            self._open.add(token)
            try:
                await self._process(batch, book, token)
            except BaseException:
                # Nothing of an unfinished batch is acknowledged; stop waiting for it
                # (the app crashes on an error and the group redelivers).
                for unfinished in self._open:
                    book.end(unfinished)
                self._open.clear()
                raise

    def save_marks(self) -> None:
        """Write the marks of every partition whose durable marks moved (before a commit)."""
        topic = self.mailbox.topic
        for partition, marks in self.pipeline.dirty_marks():
            save_marks_from_batch(self._table, topic, partition, marks)

    async def _process(self, batch: Batch, book: ConsumerBook, token: BatchInProgress) -> None:
        consumer = self._app.consumer
        pipeline = self.pipeline
        messages: list[Incoming] = []
        lag = 0  # messages still behind the batch: the lag gauge
        backlog = 0  # messages that were behind its first one: overload is judged on it
        for tp, records in batch.records:
            partition = tp.partition
            state = pipeline.partition(partition, partial(stored_marks, self._table, partition),
                                       partial(_committed_offset, consumer, tp), tp)
            ack = book.ack
            epoch = batch.epoch
            check = state.offsets.check
            for record in records:
                action = check(record.offset)
                if action is OffsetAction.SKIP:
                    continue  # a redelivery of a message already processed
                if action is OffsetAction.HOLE:
                    messages.extend(await self._fill_hole(state, tp, record.offset, book, epoch))
                stamp = record.timestamp
                messages.append(Incoming(record.value, state, partition, record.offset,
                                         partial(ack, tp, record.offset, epoch),
                                         stamp / 1000.0 if stamp is not None else None))
            highwater = consumer.highwater(tp) or 0
            lag = max(lag, highwater - records[-1].offset - 1)
            backlog = max(backlog, highwater - records[0].offset - 1)
        if not messages:
            self._finish(book, token)
            return
        critical = self._critical
        controller = self._controller
        if critical:
            controller.in_flight += 1
        else:
            await controller.yield_to_critical()
        try:
            if self._memory.should_throttle():
                await _relieve_memory()
            async with pipeline.lock:
                outcome = await pipeline.process_batch(
                    messages, backlog, on_done=partial(self._finish, book, token))
        finally:
            if critical:
                controller.in_flight -= 1
        self._metrics.lag.set(lag)
        self._metrics.reorder_held.set(outcome.held)

    def _finish(self, book: ConsumerBook, token: BatchInProgress) -> None:
        book.end(token)
        self._open.discard(token)

    async def _fill_hole(self, state: PartitionState, tp: Any, offset: int,
                         book: ConsumerBook, epoch: int) -> list[Incoming]:
        """Read the offsets before ``offset`` that the consumer never delivered.

        If they cannot be read, the message is processed anyway and the consumer
        never commits past the hole (``app.py``), so the missing messages are
        read again after the next restart rather than lost.
        """
        OFFSET_HOLES.inc()
        start = state.offsets.next_offset
        assert start is not None
        log.warning("%s delivered offset %s before %s; reading the hole directly",
                    tp, offset, start)
        records = await self._filler.fetch(tp.topic, tp.partition, start, offset)
        if len(records) < offset - start:
            log.error("%s: read %s of the %s missing messages; commits stay before the hole",
                      tp, len(records), offset - start)
        state.offsets.next_offset = offset + 1
        return [Incoming(r.value, state, tp.partition, r.offset,
                         partial(book.ack, tp, r.offset, epoch),
                         r.timestamp / 1000.0 if r.timestamp is not None else None)
                for r in records]


def _committed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset the group resumes this partition at, as Faust knows it (None: unknown)."""
    # Faust records it when it seeks to the committed offsets (a private dict).
    committed = getattr(consumer, "_committed_offset", {}).get(tp)
    return int(committed) if committed is not None else None


async def _relieve_memory() -> None:
    """Near the memory limit: collect garbage and slow intake a little (never stop)."""
    MEMORY_THROTTLED.inc()
    gc.collect()
    await asyncio.sleep(0.01)
