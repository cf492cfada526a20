"""What a worker does with a batch of Kafka messages: the event pipeline of DESIGN §1.

decode + validate → dead letters → (overload shedding) → reorder window and
sequence check → idempotent canonical log (→ handlers, which follow the log:
:mod:`~silvertine_streams.handlers.group`).

The unit of work is a batch: whatever messages of one event type were fetched
together (one message when little is waiting; see
:mod:`~silvertine_streams.agents.batch_loop`). Per-event work is plain Python
over the whole batch; I/O happens once per batch (one Lua call for the log,
one pipelined XADD for dead letters). Handlers are not run here: the app's
handler group reads what the log accepted, from a durable position, so a crash
after the log write can no longer keep an event from them.

Acknowledgement: a message is acknowledged (its offset may be committed) only
when every one of its events has left the reorder window and been logged,
dead-lettered or counted as shed, and the gap reports its events caused were
confirmed by Kafka; an event held for a missing sequence keeps its message
unacknowledged, so a crash redelivers it. A gap report's event id and
timestamp derive from the gap itself, so one that a redelivery reports again
is the same event, which the ``system`` log keeps once. Sequence marks that
moved are recorded as durable (:meth:`EventPipeline.dirty_marks`) before the
acknowledgements, so the sequence table, written before each offset commit,
never lags a committed offset. Nothing here raises on a Redis outage: the
sinks retry and hold the batch (backpressure).
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
from silvertine_streams.domain.business_keys import business_key, describe
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
from silvertine_streams.events.codec import MAX_EVENT_BYTES, MAX_MESSAGE_BYTES
from silvertine_streams.handlers.effects import derived_id
from silvertine_streams.handlers.recent import RecentlyLogged
from silvertine_streams.observability.metrics import TypeMetrics
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord, WriteStatus
from silvertine_streams.sinks.dead_letters import DeadLetter
from silvertine_streams.topics import event_topic

log = logging.getLogger(__name__)

SLICE_EVENTS = 100
"""Events of one batch processed between two ``slice_break`` calls (~0.5 ms of CPU)."""


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
    """The sequence and offset state of one partition of one event type.

    ``durable_marks`` are the high-water marks of everything released from this
    partition that is durable (logged, dead-lettered or counted as shed);
    ``marks_dirty`` says they moved since they were last saved to the table.
    """

    tracker: SequenceTracker
    buffer: ReorderBuffer[Pending]
    offsets: OffsetGuard
    tp: Any = None
    durable_marks: dict[str, int] = field(default_factory=dict)
    marks_dirty: bool = False


class Incoming(NamedTuple):
    """One Kafka message of a batch, as the pipeline needs it.

    Attributes:
        value: the message value as received.
        state: the sequence state of the message's partition.
        partition: the message's partition, for the origin.
        offset: the message's offset, for the origin.
        ack: acknowledges the message; called once all its events are durable.
        timestamp_s: the Kafka message timestamp, used as the events'
            ``timestamp`` when the producer sent none.
        origin: where the message was read, when not a Kafka offset: the
            single-process :class:`~silvertine_streams.agents.processor.EventProcessor`
            reads Redis ingress entries (``events:<type>/<entry id>``, the
            origin the ingress mirror gives them). "" = ``<topic>/<partition>/<offset>``.
    """

    value: bytes
    state: PartitionState
    partition: int
    offset: int
    ack: Callable[[], object]
    timestamp_s: float | None = None
    origin: str = ""


@dataclass(slots=True)
class _Commit:
    """What one batch (or expiry) releases: made durable in order by ``_commit``."""

    releases: list[tuple[Pending, Verdict | None]]
    records: list[LogRecord]
    events: list[Event]
    """The events of ``records``, in the same order."""
    letters: list[DeadLetter]
    gap_reports: list[SystemEvent]
    outcome: MessageOutcome
    states: list[PartitionState] = field(default_factory=list)
    """The partitions whose marks may have moved: recorded as durable before any ack."""
    tokens: list[MessageToken] = field(default_factory=list)
    """The batch's message tokens, sealed once its releases are durable (none for an expiry)."""
    stage_times: tuple[int, float | None, float] | None = None
    """(first event's ts_ns, Kafka timestamp s, agent start s) for the stage metrics."""
    on_done: Callable[[], object] | None = None
    """Called last, once everything of the batch is durable and acknowledged."""


@dataclass(slots=True)
class MessageOutcome:
    """What one batch (or one expiry) turned into, for tests, metrics and the table.

    ``held`` is final when ``process_batch`` returns; the counts of what was
    written (``logged``, ``duplicates``, ``dead_letters``) and
    ``sequence_changes`` only once the write is durable (see
    :meth:`EventPipeline.flush`).
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
    max_event_bytes: int = MAX_EVENT_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    overlap_writes: bool = False
    """Decode the next batch while this one's log write is in flight (bulk lanes).

    At most one write is in flight and the next is sent only after it succeeded,
    so the log order and the sinks' retries are unchanged; acknowledgements
    still follow durability. Critical lanes await their own write: an
    order is small, and its latency is the write's."""


class EventPipeline:
    """The pipeline of one event type in one worker.

    Args:
        event_type: the type this pipeline accepts; others are dead letters.
        policy: reorder window, overload policy and timestamp bounds.
        log_sink: the idempotent canonical-log sink of this type.
        outbox: where dead letters and system events (gap reports) go.
        overload: the lag detector that switches shedding on and off.
        now_s: corrected wall-clock seconds (the clock-sync service's).
        metrics: this type's metrics (default: the process-wide ones).
        slice_break: awaited every ``SLICE_EVENTS`` events of a batch, so
            other lanes (the critical one) get the event loop inside a long
            batch; None = run a batch's events in one stretch.
        recent: where events just logged are left for this worker's handler
            group (so it need not decode them again), when it runs here.
    """

    def __init__(
        self,
        event_type: EventType,
        policy: PipelinePolicy,
        log_sink: CanonicalLogSink,
        outbox: Outbox,
        *,
        overload: OverloadDetector | None = None,
        now_s: Callable[[], float] = time.time,
        metrics: TypeMetrics | None = None,
        slice_break: Callable[[], Awaitable[None]] | None = None,
        recent: RecentlyLogged | None = None,
    ) -> None:
        self.event_type = event_type
        self.policy = policy
        self.lock = asyncio.Lock()  # the batch loop and the expiry timer take turns
        self._log_sink = log_sink
        self._outbox = outbox
        self._overload = overload or OverloadDetector(high_lag=1 << 62, low_lag=0)
        self._now_s = now_s
        self._topic = event_topic(event_type.value)
        self._partitions: dict[int, PartitionState] = {}
        self._metrics = metrics or TypeMetrics.for_type(event_type.value)
        self._in_flight: asyncio.Future[None] | None = None  # the overlapped write, if any
        self._slice_break = slice_break
        self._recent = recent

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
            marks = restore()
            tracker = SequenceTracker(marks)
            state = PartitionState(tracker, ReorderBuffer(tracker, self.policy.reorder),
                                   OffsetGuard(first_offset()), tp, dict(marks))
            self._partitions[partition] = state
        return state

    def forget_partitions(self, partitions: Sequence[int] | None = None) -> None:
        """Drop the state of revoked partitions (all when None).

        Held events are dropped with it: their messages were never acknowledged,
        so the partition's next owner receives them again. So are marks not yet
        saved: the next owner must not see this worker write its table after it.
        """
        if partitions is None:
            self._partitions.clear()
        else:
            for partition in partitions:
                self._partitions.pop(partition, None)

    def dirty_marks(self) -> list[tuple[int, dict[str, int]]]:
        """Return ``(partition, durable marks)`` of every partition whose marks moved, and
        count them as saved: call it right before writing them to the table."""
        dirty = []
        for partition, state in self._partitions.items():
            if state.marks_dirty:
                state.marks_dirty = False
                dirty.append((partition, dict(state.durable_marks)))
        return dirty

    @property
    def held(self) -> int:
        """Events held in reorder windows, over all partitions."""
        return sum(state.buffer.held_count for state in self._partitions.values())

    # --- a batch of messages ---------------------------------------------

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
        """Run one Kafka message through the pipeline: a batch of one."""
        return await self.process_batch(
            [Incoming(value, state, partition, offset, ack, message_timestamp_s)], lag)

    async def process_batch(
        self,
        messages: Sequence[Incoming],
        lag: int = 0,
        on_done: Callable[[], object] | None = None,
    ) -> MessageOutcome:
        """Run a batch of Kafka messages (single events or envelopes) through the pipeline.

        The batch is made durable with one dead-letter write and one log write
        (the sink splits very large ones), its gap reports are sent, then every
        message whose events are all durable is acknowledged.

        Args:
            messages: the batch, each partition's messages in offset order.
            lag: messages that were behind the batch's first message when it
                started (its partitions' worst): overload detection.
            on_done: called once the batch is durable and acknowledged
                (later than the return when writes overlap).
        """
        started_s = time.time()
        outcome = MessageOutcome()
        letters: list[DeadLetter] = []
        decoded_messages: list[tuple[Incoming, str, list[Event]]] = []
        in_time = self._timestamp_window()
        received = 0
        topic = self._topic
        for message in messages:
            origin = message.origin or f"{topic}/{message.partition}/{message.offset}"
            decoded = decode_message(message.value, self.event_type,
                                     max_event_bytes=self.policy.max_event_bytes,
                                     max_message_bytes=self.policy.max_message_bytes)
            if decoded.rejects:
                letters.extend(DeadLetter(r.payload, r.dead_letter_reason, origin)
                               for r in decoded.rejects)
            events = fill_missing_identity(decoded.events, message.value, origin,
                                           message.timestamp_s)
            if not in_time(events):
                events = self._check_timestamps(events, origin, letters)
            received += len(events) + len(decoded.rejects)
            decoded_messages.append((message, origin, events))
        self._metrics.events_in.inc(received)
        shed_reasons = self._shed_under_overload(decoded_messages, lag)

        releases: list[tuple[Pending, Verdict | None]] = []
        tokens: list[MessageToken] = []
        states: dict[int, PartitionState] = {}
        slice_break = self._slice_break
        offered = 0
        for message, origin, events in decoded_messages:
            token = MessageToken(message.ack)
            tokens.append(token)
            state = message.state
            states[id(state)] = state
            buffer, tracker = state.buffer, state.tracker
            for index, event in enumerate(events):
                if slice_break is not None and offered and not offered % SLICE_EVENTS:
                    await slice_break()
                offered += 1
                stream = stream_key(event.source, event.partition_key)
                reason = shed_reasons.get(id(event), "") if shed_reasons else ""
                # The fingerprint is taken before the engine fills anything in, so a
                # redelivered copy matches its first write (DUPLICATE, not CONFLICT).
                fingerprint = "" if reason else content_fingerprint(event)
                token.remaining += 1
                if event.sequence is None:
                    event = event.with_changes(sequence=tracker.assign(stream))
                    releases.append((Pending(event, fingerprint, token, f"{origin}#{index}",
                                             stream, reason), None))
                else:
                    releases.extend(buffer.offer(stream, event.sequence, Pending(
                        event, fingerprint, token, f"{origin}#{index}", stream, reason)))
        for state in states.values():
            releases.extend(state.buffer.expire())
        commit = self._classify(releases, letters, outcome)
        commit.tokens = tokens
        commit.states = list(states.values())
        commit.on_done = on_done
        for message, _, events in decoded_messages:
            if events:  # the batch's oldest event stands for it in the stage metrics
                commit.stage_times = (events[0].ts_ns, message.timestamp_s, started_s)
                break
        outcome.held = sum(state.buffer.held_count for state in commit.states)
        await self._submit(commit, self.policy.overlap_writes)
        return outcome

    async def expire(self, state: PartitionState) -> MessageOutcome:
        """Release what waited long enough in ``state``'s reorder window."""
        outcome = MessageOutcome()
        releases = state.buffer.expire()
        if releases:
            commit = self._classify(list(releases), [], outcome)
            commit.states = [state]
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

    def _timestamp_window(self) -> Callable[[list[Event]], bool]:
        """Return a test whether events lie between the floor and now + tolerance
        (the clock is read once per batch, not once per message)."""
        check = self.policy.timestamps
        latest = datetime.fromtimestamp(self._now_s() + check.future_tolerance_s, tz=UTC)
        floor = check.floor

        def in_window(events: list[Event]) -> bool:
            # A plain loop: all() over a generator costs ~0.4 µs more per message.
            for event in events:  # noqa: SIM110
                if not floor <= event.timestamp <= latest:
                    return False
            return True

        return in_window

    def _check_timestamps(
        self, events: list[Event], origin: str, letters: list[DeadLetter]
    ) -> list[Event]:
        """Keep the events whose timestamp is acceptable; dead-letter the others."""
        check = self.policy.timestamps
        now = self._now_s()
        kept = []
        for index, event in enumerate(events):
            reason = check.check(event.timestamp, now)
            if reason is None:
                kept.append(event)
            else:
                letters.append(DeadLetter(encode_event(event), f"timestamp: {reason}",
                                          f"{origin}#{index}"))
        return kept

    def _shed_under_overload(
        self, decoded: list[tuple[Incoming, str, list[Event]]], lag: int
    ) -> dict[int, str]:
        """Return ``id(event) -> reason`` for the events to shed (empty when not overloaded).

        The policy applies to the whole batch: with single-event messages a
        per-message conflation would never shed anything.
        """
        policy = self.policy.overflow
        if policy == "block" or not self._overload.update(lag):
            return {}
        events = [event for _, _, message_events in decoded for event in message_events]
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
        events: list[Event] = []
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
                                     encode_event(item.event), item.origin,
                                     business_key(item.event)))
            events.append(item.event)
        return _Commit(releases, records, events, letters, gap_reports, outcome)

    async def _submit(self, commit: _Commit, overlap: bool) -> None:
        """Make ``commit`` durable after the write before it: now, or overlapped."""
        await self.flush()
        if overlap:
            self._in_flight = asyncio.ensure_future(self._commit(commit))
        else:
            await self._commit(commit)

    async def _commit(self, commit: _Commit) -> None:
        """Log and dead-letter a commit's events, send its gap reports, then acknowledge."""
        outcome = commit.outcome
        if commit.letters:
            await self._dead_letter(commit.letters, outcome)
        logged = 0
        records = commit.records
        if records:
            started = time.perf_counter()
            statuses = await self._log_sink.write(records)
            self._metrics.sink_latency.observe(time.perf_counter() - started)
            self._metrics.sink_batch_size.observe(len(records))
            conflicts: list[DeadLetter] = []
            recent = self._recent
            kept: list[tuple[str, Event]] | None = (
                [] if recent is not None and recent.wants(self.event_type.value) else None)
            for record, status, event in zip(records, statuses, commit.events, strict=True):
                if status is WriteStatus.WRITTEN:
                    logged += 1
                    if kept is not None:
                        kept.append((record.origin, event))
                elif status is WriteStatus.DUPLICATE:
                    outcome.duplicates += 1
                elif status is WriteStatus.BUSINESS_DUPLICATE:
                    self._metrics.business_duplicates.inc()
                    conflicts.append(DeadLetter(
                        record.event_json,
                        f"duplicate_trade: {describe(record.business_key)} was already "
                        f"logged under another event id; {record.event_id} is not logged "
                        "again (first write wins)",
                        record.origin,
                    ))
                else:
                    conflicts.append(DeadLetter(
                        record.event_json,
                        f"id_conflict: event id {record.event_id} was already logged "
                        "with different content (first write wins)",
                        record.origin,
                    ))
            if kept and recent is not None:
                recent.put(kept)
            if conflicts:
                await self._dead_letter(conflicts, outcome)
        outcome.logged += logged
        # Alerts before acknowledgements: a crash from here on redelivers the
        # batch, which reports the same gaps as the same events (logged once).
        for report in commit.gap_reports:
            await self._outbox.system(report)
        self._metrics.events_logged.inc(logged)
        self._metrics.dedupe_hits.inc(outcome.duplicates)
        self._metrics.sequence_gaps.inc(outcome.gaps)
        self._metrics.sequence_stale.inc(outcome.stale)
        # Everything released is now durable (logged, dead-lettered or counted):
        # its marks count as durable before any of its messages is acknowledged.
        for state in commit.states:
            changes = state.tracker.drain_changes()
            if changes:
                state.durable_marks.update(changes)
                state.marks_dirty = True
                outcome.sequence_changes.update(changes)
        for item, _ in commit.releases:
            item.token.done_one()
        for token in commit.tokens:
            token.seal()
        if commit.stage_times is not None:
            self._metrics.observe_stages(*commit.stage_times, time.time())
        if commit.on_done is not None:
            commit.on_done()

    async def _dead_letter(self, letters: list[DeadLetter], outcome: MessageOutcome) -> None:
        await self._outbox.dead_letters(letters)
        outcome.dead_letters += len(letters)
        self._metrics.count_dead_letters(letter.reason for letter in letters)


def _gap_report(event: Event, stream: str, expected: int, got: int,
                critical: bool) -> SystemEvent:
    """The ``sequence_gap`` system event of one gap, the same whenever it is reported.

    Its id derives from the event that revealed the gap (whose id a redelivery
    keeps), the stream and the two sequences, and its timestamp is that
    event's: a redelivery that reports the gap again sends an identical event,
    which the log keeps once.
    """
    event_type = event.event_type.value
    return SystemEvent(
        event_id=derived_id(event.event_id, "sequence_gap", event_type, stream, expected, got),
        timestamp=event.timestamp,
        kind="sequence_gap",
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        message=f"sequence gap on {event_type} {stream}: expected {expected}, got {got}",
        details={"event_type": event_type, "stream": stream,
                 "expected": expected, "got": got, "event_id": event.event_id},
        symbol=event.partition_key,
        source="silvertine.sequencer",
    )
