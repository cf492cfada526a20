"""What an agent does with one Kafka message: the event pipeline of DESIGN §1.

decode + validate → dead letters → (overload shedding) → reorder window and
sequence check → idempotent canonical log → handlers.

Per-event work is plain Python over a whole envelope; I/O happens once per
message (one Lua call for the log, one pipelined XADD for dead letters), and
handlers see only events the log accepted as new, after they are durable.

Acknowledgement: the agent reads with manual acks. A message is acknowledged
(its offset may be committed) only when every one of its events has left the
reorder window and been logged, dead-lettered or counted as shed, and the
handlers have been given the new ones; an event held for a missing sequence
keeps its message unacknowledged, so a crash redelivers it. Nothing here
raises on a Redis outage: the sinks retry and hold the stream, because Faust
acknowledges a message when its agent raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.domain.flow import OverflowPolicy, OverloadDetector, shed, stream_key_of
from silvertine_streams.domain.offsets import OffsetGuard
from silvertine_streams.domain.reorder import ReleaseKind, ReorderBuffer, ReorderPolicy, Verdict
from silvertine_streams.domain.sequencing import SequenceTracker, stream_key
from silvertine_streams.domain.timestamps import TimestampCheck
from silvertine_streams.events import (
    Event,
    EventType,
    Severity,
    SystemEvent,
    content_fingerprint,
    decode_message,
    encode_event,
    fill_missing_identity,
)
from silvertine_streams.handlers import HandlerDispatcher
from silvertine_streams.observability.metrics import TypeMetrics
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord, WriteStatus
from silvertine_streams.sinks.dead_letters import DeadLetter
from silvertine_streams.topics import event_topic

log = logging.getLogger(__name__)

SLICE_EVENTS = 100
"""Events of one message processed between two ``slice_break`` calls (~0.5 ms of CPU)."""


class MessageToken:
    """Counts a message's events still in flight; acknowledges it when none are left."""

    __slots__ = ("_ack", "remaining", "sealed")

    def __init__(self, ack: Callable[[], object]) -> None:
        self._ack = ack
        self.remaining = 0
        self.sealed = False  # every event of the message has been offered

    def done_one(self) -> None:
        """One event left the pipeline; acknowledge the message after its last."""
        self.remaining -= 1
        if self.remaining == 0 and self.sealed:
            self._ack()

    def seal(self) -> None:
        """No more events will be added; acknowledge now if none is in flight."""
        self.sealed = True
        if self.remaining == 0:
            self._ack()


class Pending(NamedTuple):
    """One event on its way through the reorder window."""

    event: Event
    fingerprint: str
    token: MessageToken
    origin: str
    stream: str
    shed_reason: str  # "" = to be logged; else counted as shed, never logged


@dataclass(slots=True)
class PartitionState:
    """The sequence and offset state of one partition of one event type."""

    tracker: SequenceTracker
    buffer: ReorderBuffer[Pending]
    offsets: OffsetGuard
    tp: Any = None
    unsaved: bool = False
    """Marks moved by an expiry (the timer cannot write the table); saved with the next message."""


@dataclass(slots=True)
class _Commit:
    """What one message (or expiry) releases: made durable in order by ``_commit``."""

    releases: list[tuple[Pending, Verdict | None]]
    records: list[LogRecord]
    logged_items: list[Pending]
    letters: list[DeadLetter]
    gap_reports: list[SystemEvent]
    outcome: MessageOutcome
    token: MessageToken | None = None
    """The message's token, sealed once its releases are durable (None for an expiry)."""
    stage_times: tuple[int, float | None, float] | None = None
    """(first event's ts_ns, Kafka timestamp s, agent start s) for the stage metrics."""


@dataclass(slots=True)
class MessageOutcome:
    """What one message (or one expiry) turned into, for tests, metrics and the table.

    ``held`` and ``sequence_changes`` are final when ``process`` returns; the
    counts of what was written (``logged``, ``duplicates``, ``dead_letters``)
    only once the write is durable (see :meth:`EventPipeline.flush`).
    """

    logged: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    gaps: int = 0
    stale: int = 0
    late: int = 0
    shed: int = 0
    held: int = 0
    sequence_changes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelinePolicy:
    """How one event type is sequenced and protected under load."""

    reorder: ReorderPolicy
    overflow: OverflowPolicy = "block"
    keep_per_batch: int = 100
    timestamps: TimestampCheck = field(
        default_factory=lambda: TimestampCheck(5.0, datetime(2000, 1, 1, tzinfo=UTC))
    )
    overlap_writes: bool = False
    """Decode the next message while this one's log write is in flight (bulk lanes).

    At most one write is in flight and the next is sent only after it succeeded,
    so the log order and the sinks' retries are unchanged; acknowledgements and
    handlers still follow durability. Critical lanes await their own write: an
    order is small, and its latency is the write's."""


class EventPipeline:
    """The pipeline of one event type in one worker.

    Args:
        event_type: the type this pipeline accepts; others are dead letters.
        policy: reorder window, overload policy and timestamp bounds.
        log_sink: the idempotent canonical-log sink of this type.
        outbox: where dead letters and system events (gap reports) go.
        dispatcher: subscribed handlers, or None.
        overload: the lag detector that switches shedding on and off.
        now_s: corrected wall-clock seconds (the clock-sync service's).
        metrics: this type's metrics (default: the process-wide ones).
        slice_break: awaited every ``SLICE_EVENTS`` events of a message, so
            other agents (the critical lane) get the event loop inside a long
            envelope; None = run an envelope's events in one stretch.
    """

    def __init__(
        self,
        event_type: EventType,
        policy: PipelinePolicy,
        log_sink: CanonicalLogSink,
        outbox: Outbox,
        dispatcher: HandlerDispatcher | None = None,
        *,
        overload: OverloadDetector | None = None,
        now_s: Callable[[], float] = time.time,
        metrics: TypeMetrics | None = None,
        slice_break: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.event_type = event_type
        self.policy = policy
        self.lock = asyncio.Lock()  # the agent and the expiry timer take turns
        self._log_sink = log_sink
        self._outbox = outbox
        self._dispatcher = dispatcher
        self._overload = overload or OverloadDetector(high_lag=1 << 62, low_lag=0)
        self._now_s = now_s
        self._topic = event_topic(event_type.value)
        self._partitions: dict[int, PartitionState] = {}
        self._metrics = metrics or TypeMetrics.for_type(event_type.value)
        self._in_flight: asyncio.Future[None] | None = None  # the overlapped write, if any
        self._slice_break = slice_break

    # --- partition state -------------------------------------------------

    def partition(
        self,
        partition: int,
        restore: Callable[[], dict[str, int]],
        first_offset: Callable[[], int | None] = lambda: None,
        tp: Any = None,
    ) -> PartitionState:
        """Return the state of ``partition``, restoring it on first use.

        Args:
            partition: the partition number.
            restore: returns the persisted high-water marks.
            first_offset: returns the offset the group resumes at (committed).
            tp: the Kafka topic-partition, for seeks.
        """
        state = self._partitions.get(partition)
        if state is None:
            tracker = SequenceTracker(restore())
            state = PartitionState(tracker, ReorderBuffer(tracker, self.policy.reorder),
                                   OffsetGuard(first_offset()), tp)
            self._partitions[partition] = state
        return state


    def forget_partitions(self, partitions: Sequence[int] | None = None) -> None:
        """Drop the state of revoked partitions (all when None).

        Held events are dropped with it: their messages were never acknowledged,
        so the partition's next owner receives them again.
        """
        if partitions is None:
            self._partitions.clear()
        else:
            for partition in partitions:
                self._partitions.pop(partition, None)

    @property
    def held(self) -> int:
        """Events held in reorder windows, over all partitions."""
        return sum(state.buffer.held_count for state in self._partitions.values())

    # --- one message -----------------------------------------------------

    async def process(
        self,
        value: bytes,
        state: PartitionState,
        partition: int,
        offset: int,
        ack: Callable[[], object],
        message_timestamp_s: float | None = None,
        lag: int = 0,
    ) -> MessageOutcome:
        """Run one Kafka message (a single event or an envelope) through the pipeline.

        Args:
            value: the message value as received.
            state: the sequence state of the message's partition.
            partition: the message's partition, for the origin.
            offset: the message's offset, for the origin.
            ack: acknowledges the message; called once all its events are done.
            message_timestamp_s: the Kafka message timestamp, used as the events'
                ``timestamp`` when the producer sent none.
            lag: messages behind the partition's high-water mark (overload).
        """
        started_s = time.time()
        outcome = MessageOutcome()
        origin = f"{self._topic}/{partition}/{offset}"
        decoded = decode_message(value, self.event_type)
        letters = [DeadLetter(r.payload, f"invalid: {r.reason}", origin) for r in decoded.rejects]
        events = fill_missing_identity(decoded.events, value, origin, message_timestamp_s)
        events = self._check_timestamps(events, origin, letters)
        self._metrics.events_in.inc(len(events) + len(decoded.rejects))
        shed_reasons = self._shed_under_overload(events, lag)

        token = MessageToken(ack)
        buffer, tracker = state.buffer, state.tracker
        releases: list[tuple[Pending, Verdict | None]] = []
        slice_break = self._slice_break
        for index, event in enumerate(events):
            if slice_break is not None and index and not index % SLICE_EVENTS:
                await slice_break()
            stream = stream_key(event.source, event.partition_key)
            reason = shed_reasons.get(id(event), "") if shed_reasons else ""
            # The fingerprint is taken before the engine fills anything in, so a
            # redelivered copy matches its first write (DUPLICATE, not CONFLICT).
            fingerprint = "" if reason else content_fingerprint(event)
            token.remaining += 1
            if event.sequence is None:
                event = event.with_changes(sequence=tracker.assign(stream))
                releases.append((Pending(event, fingerprint, token, f"{origin}#{index}", stream,
                                         reason), None))
            else:
                releases.extend(buffer.offer(stream, event.sequence, Pending(
                    event, fingerprint, token, f"{origin}#{index}", stream, reason)))
        releases.extend(buffer.expire())
        commit = self._classify(releases, letters, outcome)
        commit.token = token
        if events:
            commit.stage_times = (events[0].ts_ns, message_timestamp_s, started_s)
        outcome.held = buffer.held_count
        outcome.sequence_changes = tracker.drain_changes()
        await self._submit(commit, self.policy.overlap_writes)
        return outcome

    async def expire(self, state: PartitionState) -> MessageOutcome:
        """Release what waited long enough in ``state``'s reorder window."""
        outcome = MessageOutcome()
        releases = state.buffer.expire()
        if releases:
            commit = self._classify(list(releases), [], outcome)
            outcome.sequence_changes = state.tracker.drain_changes()
            state.unsaved = state.unsaved or bool(outcome.sequence_changes)
            await self._submit(commit, overlap=False)
        return outcome

    async def flush(self) -> None:
        """Wait until the overlapped write, if any, is durable (re-raising its failure)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            await in_flight

    def due_partitions(self, now: float) -> list[PartitionState]:
        """Return the partitions whose reorder window has an item due at ``now``."""
        due = []
        for state in self._partitions.values():
            deadline = state.buffer.next_deadline()
            if deadline is not None and deadline <= now:
                due.append(state)
        return due

    # --- steps -------------------------------------------------------------

    def _check_timestamps(
        self, events: list[Event], origin: str, letters: list[DeadLetter]
    ) -> list[Event]:
        check = self.policy.timestamps
        now = self._now_s()
        latest = datetime.fromtimestamp(now + check.future_tolerance_s, tz=UTC)
        floor = check.floor
        if all(floor <= e.timestamp <= latest for e in events):
            return events
        kept = []
        for index, event in enumerate(events):
            reason = check.check(event.timestamp, now)
            if reason is None:
                kept.append(event)
            else:
                letters.append(DeadLetter(encode_event(event), f"timestamp: {reason}",
                                          f"{origin}#{index}"))
        return kept

    def _shed_under_overload(self, events: list[Event], lag: int) -> dict[int, str]:
        """Return ``id(event) -> reason`` for the events to shed (empty when not overloaded)."""
        policy = self.policy.overflow
        if policy == "block" or not self._overload.update(lag):
            return {}
        result = shed(events, policy, self.policy.keep_per_batch, key=stream_key_of)
        return {id(event): result.reason for event in result.shed}

    def _classify(
        self,
        releases: list[tuple[Pending, Verdict | None]],
        letters: list[DeadLetter],
        outcome: MessageOutcome,
    ) -> _Commit:
        """Sort what left the reorder window into log records, dead letters and gap reports."""
        records: list[LogRecord] = []
        logged_items: list[Pending] = []
        gap_reports: list[SystemEvent] = []
        for item, verdict in releases:
            if verdict is not None:
                if verdict.kind is ReleaseKind.LATE:
                    outcome.late += 1
                    letters.append(DeadLetter(
                        encode_event(item.event),
                        f"late: sequence {item.event.sequence} of {item.stream} arrived "
                        "after its gap was reported", item.origin))
                    continue
                if verdict.gap is not None:
                    outcome.gaps += 1
                    gap = verdict.gap
                    gap_reports.append(_gap_report(item.event, gap.stream, gap.expected,
                                                   gap.got, gap.critical))
                if verdict.kind is ReleaseKind.STALE:
                    outcome.stale += 1
            if item.shed_reason:
                outcome.shed += 1
                self._metrics.count_shed(item.shed_reason)
                continue
            records.append(LogRecord(item.event.event_id, item.fingerprint,
                                     encode_event(item.event), item.origin))
            logged_items.append(item)
        return _Commit(releases, records, logged_items, letters, gap_reports, outcome)

    async def _submit(self, commit: _Commit, overlap: bool) -> None:
        """Make ``commit`` durable after the write before it: now, or overlapped."""
        await self.flush()
        if overlap:
            self._in_flight = asyncio.ensure_future(self._commit(commit))
        else:
            await self._commit(commit)

    async def _commit(self, commit: _Commit) -> None:
        """Log and dead-letter a commit's events, report gaps, run handlers, then acknowledge."""
        outcome = commit.outcome
        if commit.letters:
            await self._dead_letter(commit.letters, outcome)
        new_events: list[Event] = []
        records = commit.records
        if records:
            started = time.perf_counter()
            statuses = await self._log_sink.write(records)
            self._metrics.sink_latency.observe(time.perf_counter() - started)
            self._metrics.sink_batch_size.observe(len(records))
            conflicts: list[DeadLetter] = []
            for record, item, status in zip(records, commit.logged_items, statuses, strict=True):
                if status is WriteStatus.WRITTEN:
                    new_events.append(item.event)
                elif status is WriteStatus.DUPLICATE:
                    outcome.duplicates += 1
                else:
                    conflicts.append(DeadLetter(
                        record.event_json,
                        f"id_conflict: event id {record.event_id} was already logged "
                        "with different content (first write wins)",
                        record.origin,
                    ))
            if conflicts:
                await self._dead_letter(conflicts, outcome)
        outcome.logged += len(new_events)
        self._metrics.events_logged.inc(len(new_events))
        self._metrics.dedupe_hits.inc(outcome.duplicates)
        self._metrics.sequence_gaps.inc(outcome.gaps)
        self._metrics.sequence_stale.inc(outcome.stale)
        if commit.stage_times is not None:
            self._metrics.observe_stages(*commit.stage_times, time.time())
        for report in commit.gap_reports:
            await self._outbox.system(report)
        if new_events and self._dispatcher is not None:
            self._metrics.record_dispatch(
                await self._dispatcher.dispatch(new_events, self.event_type))
        await self._outbox.send_queued()
        # Everything released is durable (logged, dead-lettered or counted), its gap
        # reports are sent and its new events handled: only now may the offset be
        # committed. A graceful stop waits for unacknowledged messages and then
        # commits; acknowledged before the handlers ran, a message's events were
        # logged and committed but never handled when the stop cancelled the agent.
        for item, _ in commit.releases:
            item.token.done_one()
        if commit.token is not None:
            commit.token.seal()

    async def _dead_letter(self, letters: list[DeadLetter], outcome: MessageOutcome) -> None:
        await self._outbox.dead_letters(letters)
        outcome.dead_letters += len(letters)
        self._metrics.count_dead_letters(letter.reason for letter in letters)


def _gap_report(event: Event, stream: str, expected: int, got: int,
                critical: bool) -> SystemEvent:
    return SystemEvent(
        kind="sequence_gap",
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        message=f"sequence gap on {event.event_type.value} {stream}: "
        f"expected {expected}, got {got}",
        details={"event_type": event.event_type.value, "stream": stream,
                 "expected": expected, "got": got, "event_id": event.event_id},
        symbol=event.partition_key,
        source="silvertine.sequencer",
    )
