"""The consumer's fetch loop, handing whole fetched batches of our topics to the batch loops.

Why not Faust's streams: Faust spends ~200 µs of CPU per Kafka *message* in
its own machinery (a stream event, two tasks, a flow-control queue, sensors),
so a worker topped out near 5k messages/s whatever the agent did, and
single-event messages (what most producers send) ran at ~1.5k events/s
(DESIGN §5). Faust's ``Fetcher`` runs ``Consumer._drain_messages``; our
consumer (``app.py``) runs :func:`drain` instead, which fetches exactly as
Faust does and hands each fetch's records of our event topics to the
:class:`~silvertine_streams.agents.intake.Intake` in one call. Records of
any other topic (tables' changelogs during recovery) still go through Faust's
per-message path, unchanged. Faust keeps everything else: group membership
and rebalances, commits, tables and their recovery, the web server.

Faust's offset bookkeeping stays truthful (:class:`ConsumerBook`): a message
is marked acknowledged in Faust's own structures (``_acked``,
``_acked_index``, ``_n_acked``, under ``ack_lock``) only once its events are
durable, so Faust commits only what is durable; each batch in progress is an
entry of ``_unacked_messages``, so a revoke or a stop waits for it as it waits
for a message in an agent. Acks of batches fetched before a revoke are void:
Faust forgets the revoked partitions' acks and committed offsets at once and
would otherwise commit a later run of offsets past messages held back in a
reorder window.

This reads private Faust internals: faust-streaming is pinned (README), and the
integration and fault tests (commits, kill -9, rebalances) cover this loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from time import monotonic
from typing import Any

from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from silvertine_streams.agents.intake import Intake

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.1
"""Pause when no partition is assigned yet (Faust's own loop sleeps 1 s)."""
RECHECK_S = 0.01
"""Fetch timeout while a full mailbox is left out: fetch its partitions again soon."""


class BatchInProgress:
    """A batch in Faust's set of unacknowledged messages, so revokes and stops wait for it.

    Faust's ``wait_empty`` reads ``acked`` and ``refcount`` of what it waits for.
    """

    __slots__ = ("acked", "refcount", "messages", "__weakref__")

    def __init__(self, messages: int) -> None:
        self.acked = False
        self.refcount = 1
        self.messages = messages

    def __repr__(self) -> str:
        return f"<batch of {self.messages} messages in progress>"


class ConsumerBook:
    """Our batches' entries in the Faust consumer's offset bookkeeping.

    Args:
        consumer: the app's Faust consumer.
        intake: whose ``epoch`` says which acks are still valid.
    """

    def __init__(self, consumer: Any, intake: Intake) -> None:
        self._consumer = consumer
        self._intake = intake

    def ack(self, tp: Any, offset: int, epoch: int) -> None:
        """Mark ``offset`` of ``tp`` acknowledged (committable), as ``Consumer.ack`` does.

        Void when partitions were revoked since the batch was delivered: the
        partition's next owner reads the message again (the log absorbs it).
        """
        if epoch != self._intake.epoch:
            return
        consumer = self._consumer
        with ack_lock:
            committed = consumer._committed_offset[tp]
            if committed is not None and offset < committed:
                return
            acked_index = consumer._acked_index[tp]
            if offset in acked_index:
                return
            acked_index.add(offset)
            consumer._acked[tp].append(offset)
            consumer._n_acked += 1
        notify(consumer._waiting_for_ack)

    def begin(self, messages: int) -> BatchInProgress:
        """Register a batch in progress (revokes and stops wait until :meth:`end`)."""
        token = BatchInProgress(messages)
        self._consumer._unacked_messages.add(token)
        return token

    def end(self, token: BatchInProgress) -> None:
        """The batch is durable and acknowledged (or abandoned); may be called twice."""
        if token.acked:
            return
        token.acked = True
        self._consumer._unacked_messages.discard(token)
        notify(self._consumer._waiting_for_ack)


async def drain(consumer: Any, fetcher: Any, intake: Intake) -> None:
    """Run Faust's fetch loop, delivering our topics' records to ``intake`` a fetch at a time.

    Mirrors ``faust.transport.consumer.Consumer._drain_messages`` (flow control,
    generation checks, the seek back after a fetch while flow was stopped,
    commits every ``broker_commit_every`` acks) and ``getmany``.
    """
    app = consumer.app
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    try:
        while not (consumer_stopped() or fetcher_stopped()):
            if not consumer.flow_active:
                await consumer.wait(consumer.can_resume_flow)
                continue
            active = consumer._get_active_partitions()
            fetchable = intake.fetchable(active)
            if not fetchable:
                if active:
                    await intake.wait_for_room(1.0)  # every mailbox of ours is full
                else:
                    await consumer.sleep(IDLE_WAIT_S)
                continue
            generation = app.consumer_generation_id
            records = await consumer._getmany(
                active_partitions=fetchable,
                timeout=1.0 if len(fetchable) == len(active) else RECHECK_S)
            if not records or consumer.should_stop:
                continue
            if not consumer.flow_active:
                # Faust drops what was fetched while flow stopped (a rebalance) and
                # seeks back to the committed offsets, as aiokafka's position moved on.
                try:
                    await consumer.perform_seek()
                except Exception as exc:  # Faust only warns here too
                    log.warning("seek after a fetch while flow was stopped failed: %r", exc)
                continue
            if app.consumer_generation_id != generation:
                continue  # fetched for the old assignment; the rebalance seeks again
            _note_fetched(consumer, records, intake)
            others = intake.deliver(records)
            if others:
                await _drain_others(consumer, others)
            commit_every = consumer._commit_every
            if commit_every is not None and consumer._n_acked >= commit_every:
                consumer._n_acked = 0
                await consumer.commit()
    except consumer.consumer_stopped_errors:
        if app.should_stop:
            log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if app.should_stop:
            log.info("Consumer shutting down for user cancel.")
            return
        raise


def _note_fetched(consumer: Any, records: Mapping[Any, Sequence[Any]], intake: Intake) -> None:
    """Keep Faust's monitor and read offsets current for our partitions, once per fetch.

    Faust's livelock detector reads ``stream_inbound_time``; its per-message
    sensors are not called for batches (our own metrics count events).
    """
    monitor = consumer.app.monitor
    now = monotonic()
    for tp, batch in records.items():
        if batch and intake.owns(tp.topic):
            consumer._read_offset[tp] = batch[-1].offset
            if monitor is not None:
                monitor.stream_inbound_time[tp] = now
                monitor.track_tp_end_offset(tp, consumer.highwater(tp))


async def _drain_others(consumer: Any, records: Mapping[Any, Sequence[Any]]) -> None:
    """Hand records of other topics to Faust one message at a time, as Faust's loop does."""
    callback = consumer.callback
    read_offset = consumer._read_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    since_yield = 0
    for tp, record in _round_robin(consumer, records):
        if not consumer.flow_active:
            break
        since_yield += 1
        if since_yield > 100:
            await asyncio.sleep(0)
            since_yield = 0
        message = consumer._to_message(tp, record)
        offset = message.offset
        r_offset = read_offset[tp]
        if r_offset is None or offset >= r_offset:
            if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                await consumer._add_gap(tp, r_offset + 1, offset)
            await consumer.wait_first(callback(message), consumer.suspend_flow.wait())
            read_offset[tp] = offset


def _round_robin(consumer: Any, records: Mapping[Any, Sequence[Any]]) -> Iterable[Any]:
    """Faust's scheduler order (round-robin over topics, then partitions)."""
    iterated: Iterable[Any] = consumer.scheduler.iterate(records)
    return iterated
