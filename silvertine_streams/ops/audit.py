"""Audit one event id: where it came in, where it was logged, or why it was rejected.

Fast by construction, no scan of the log:

* the canonical log's dedupe index holds ``event_id -> "<fingerprint>|<log entry id>"``
  in time buckets ``ids:<type>:<b>``; the few buckets alive are read with one
  pipelined round trip, then ``XRANGE id id`` fetches the entry (its ``event``
  and ``origin`` = ``silvertine.<type>/<partition>/<offset>#<index>``);
* the dead-letter sink indexes ``dlq`` by event id in ``dlq:ids``, and
  requeues are recorded in ``dlq:requeued``.

An id older than the dedupe window has left the index; the audit then scans a
bounded number of the newest log entries (``scan_limit`` per type, optionally
within ``since``/``until`` log time) and says so in its notes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from silvertine_streams.replay.dead_letters import (
    DeadLetterEntry,
    iter_dead_letters,
    parse_entry,
)
from silvertine_streams.replay.reader import entry_datetime, id_range, raw_client
from silvertine_streams.settings import Settings
from silvertine_streams.sinks.canonical_log import split_index_value
from silvertine_streams.sinks.keys import dedupe_bucket
from silvertine_streams.topics import (
    DLQ_INDEX,
    DLQ_REQUEUED,
    DLQ_STREAM,
    EVENT_TYPES,
    log_stream,
)

DEFAULT_SCAN_LIMIT = 100_000
_ORIGIN = re.compile(r"^(?P<topic>[^/]+)/(?P<partition>\d+)/(?P<offset>\d+)(?:#(?P<index>\d+))?$")
_INGRESS_ID = re.compile(r"^(?P<stream>events:[a-z_]+)/(?P<entry>\d+-\d+)(?:#(?P<index>\d+))?$")
_ENCODE = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class KafkaCoordinates:
    """Where a message was in Kafka.

    Attributes:
        topic: the topic.
        partition: the partition.
        offset: the message's offset.
        index: the event's position in a batch envelope (None for a single event).
    """

    topic: str
    partition: int
    offset: int
    index: int | None = None

    @classmethod
    def parse(cls, origin: str) -> KafkaCoordinates | None:
        """Parse ``topic/partition/offset[#index]``; None for any other origin."""
        match = _ORIGIN.match(origin)
        if match is None:
            return None
        index = match.group("index")
        return cls(match.group("topic"), int(match.group("partition")),
                   int(match.group("offset")), int(index) if index is not None else None)


@dataclass(frozen=True, slots=True)
class LogFinding:
    """The event's entry in a canonical log.

    Attributes:
        event_type: whose log.
        entry_id: the log entry id.
        origin: the entry's ``origin`` field.
        event: the logged event JSON, decoded.
        found_by: ``"dedupe index"`` or ``"scan"``.
    """

    event_type: str
    entry_id: str
    origin: str
    event: dict[str, Any]
    found_by: str

    @property
    def logged_at(self) -> datetime:
        """When the canonical log received it (the processed-at time)."""
        return entry_datetime(self.entry_id)

    @property
    def kafka(self) -> KafkaCoordinates | None:
        """The Kafka message it was read from."""
        return KafkaCoordinates.parse(self.origin)


@dataclass(frozen=True, slots=True)
class DedupeFinding:
    """The event id in a dedupe bucket.

    Attributes:
        key: the bucket key ``ids:<type>:<b>``.
        fingerprint: the content fingerprint logged under the id.
        entry_id: the log entry recorded with it (None in values written before
            entry ids were recorded).
        expires_in_s: seconds until the bucket expires (None if it has no expiry).
    """

    key: str
    fingerprint: str
    entry_id: str | None
    expires_in_s: float | None


@dataclass(slots=True)
class AuditReport:
    """Everything found about one event id.

    Attributes:
        event_id: the id audited.
        log: its canonical-log entries (one, unless it was logged before the
            dedupe index reached it, or under several types).
        dedupe: its dedupe index entries.
        dead_letters: dead letters carrying this id.
        requeues: ``(dlq entry id, ingress entry)`` for each requeue of it.
        kafka_timestamp_ms: the Kafka timestamp of its message, when looked up.
        notes: what was searched and how, for a person.
    """

    event_id: str
    log: list[LogFinding] = field(default_factory=list)
    dedupe: list[DedupeFinding] = field(default_factory=list)
    dead_letters: list[DeadLetterEntry] = field(default_factory=list)
    requeues: list[tuple[str, str]] = field(default_factory=list)
    kafka_timestamp_ms: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """Whether anything at all was found."""
        return bool(self.log or self.dead_letters or self.dedupe or self.requeues)

    @property
    def status(self) -> str:
        """One of ``logged``, ``rejected``, ``logged (and rejected copies)``, ``not found``."""
        if self.log and self.dead_letters:
            return "logged (and rejected copies)"
        if self.log:
            return "logged"
        if self.dead_letters:
            return "rejected"
        if self.dedupe:
            return "indexed (log entry not found)"
        return "not found"

    @property
    def ingress(self) -> str:
        """How the event entered the engine, as far as the records tell."""
        match = _INGRESS_ID.match(self.event_id)
        if match is not None:
            return (f"Redis ingress stream {match.group('stream')}, entry {match.group('entry')} "
                    "(sent without event_id; the ingress mirror derived it from the entry)")
        for letter in self.dead_letters:
            found = _INGRESS_ID.match(letter.origin)
            if found is not None:
                return f"Redis ingress stream {found.group('stream')}, entry {found.group('entry')}"
        coordinates = next((f.kafka for f in self.log if f.kafka is not None), None)
        if coordinates is None:
            coordinates = next((c for c in (KafkaCoordinates.parse(d.origin)
                                             for d in self.dead_letters) if c), None)
        if coordinates is not None:
            return (f"Kafka {coordinates.topic}, produced directly or forwarded by the ingress "
                    "mirror (which keeps no record of the entries it forwards)")
        return "unknown"


async def audit(
    redis: Redis,
    event_id: str,
    *,
    window_s: float = 86_400.0,
    types: Sequence[str] | None = None,
    scan_limit: int = DEFAULT_SCAN_LIMIT,
    since: datetime | None = None,
    until: datetime | None = None,
    now: Callable[[], float] = time.time,
) -> AuditReport:
    """Find everything the engine recorded about ``event_id``.

    Args:
        redis: the Redis of the canonical log and the DLQ.
        event_id: the id to audit.
        window_s: the workers' ``SILVERTINE_DEDUPE_WINDOW_S`` (it names the buckets).
        types: the event types to look in (default: all).
        scan_limit: entries per log (and of ``dlq``) the fallback scan may read.
        since: the fallback scan starts at this log time (default: the newest entry).
        until: the fallback scan reads entries before this log time.
        now: wall-clock seconds (picks the buckets; inject in tests).
    """
    chosen = list(types) if types else list(EVENT_TYPES)
    report = AuditReport(event_id)
    await _from_dedupe_index(redis, report, chosen, window_s, now())
    await _from_dlq_index(redis, report)
    if report.dedupe and not report.log and all(d.entry_id for d in report.dedupe):
        report.notes.append("the dedupe index names a log entry that no longer exists "
                            "(the log was trimmed?)")
    if not report.log and not report.dead_letters:
        # Nothing indexed: older than the dedupe window, or never seen. Bounded scans.
        await _scan_logs(redis, report, chosen, scan_limit, since, until)
        if not report.log:
            await _scan_dlq(redis, report, scan_limit)
    return report


async def logged_entries(
    redis: Redis, event_id: str, types: Sequence[str], *, window_s: float = 86_400.0,
    now: Callable[[], float] = time.time,
) -> list[LogFinding]:
    """Return the canonical-log entries of ``event_id``, through the dedupe index only.

    No scan: an id older than the dedupe window (or never logged) gives ``[]``.
    Arguments as for :func:`audit`.
    """
    report = AuditReport(event_id)
    await _from_dedupe_index(redis, report, list(types), window_s, now())
    return report.log


async def _from_dedupe_index(
    redis: Redis, report: AuditReport, types: list[str], window_s: float, now_s: float
) -> None:
    bucket = int(now_s // window_s)
    # A bucket lives 2 windows after its last write: b-2 may still answer. b+1
    # covers a writer whose clock runs ahead of ours.
    buckets = (bucket + 1, bucket, bucket - 1, bucket - 2)
    keys = [dedupe_bucket(t, b) for t in types for b in buckets]
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, report.event_id)
        pipe.pttl(key)
    replies = await pipe.execute()
    raw = raw_client(redis)
    for key, value, ttl in zip(keys, replies[::2], replies[1::2], strict=True):
        if value is None:
            continue
        fingerprint, entry_id = split_index_value(value)
        report.dedupe.append(DedupeFinding(key, fingerprint, entry_id,
                                           int(ttl) / 1000 if int(ttl) >= 0 else None))
        if entry_id is None:
            continue
        event_type = key.split(":")[1]
        reply = await raw.execute_command("XRANGE", log_stream(event_type), entry_id, entry_id)
        if reply:
            report.log.append(_finding(event_type, reply[0], "dedupe index"))


async def _from_dlq_index(redis: Redis, report: AuditReport) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.hget(DLQ_INDEX, report.event_id)
    pipe.hget(DLQ_REQUEUED, report.event_id)
    indexed, requeued = await pipe.execute()
    if requeued:
        for note in _text(requeued).split(";"):
            parts = note.split()
            if len(parts) == 2:
                report.requeues.append((parts[0], parts[1]))
    if not indexed:
        return
    raw = raw_client(redis)
    for entry_id in _text(indexed).split():
        reply = await raw.execute_command("XRANGE", DLQ_STREAM, entry_id, entry_id)
        if reply:
            report.dead_letters.append(parse_entry(reply[0][0], reply[0][1]))


async def _scan_logs(
    redis: Redis, report: AuditReport, types: list[str], limit: int,
    since: datetime | None, until: datetime | None,
) -> None:
    needle = b'"event_id":' + _ENCODE(report.event_id)
    low, high = id_range(since, until)
    raw = raw_client(redis)
    for event_type in types:
        key, scanned, cursor = log_stream(event_type), 0, high
        while scanned < limit:
            count = min(5000, limit - scanned)
            reply = await raw.execute_command("XREVRANGE", key, cursor, low, "COUNT", count)
            if not reply:
                break
            scanned += len(reply)
            for entry in reply:
                body = _field(entry[1], "event")
                if body is not None and needle in body:
                    report.log.append(_finding(event_type, entry, "scan"))
            if len(reply) < count:
                break
            cursor = _before(_text(reply[-1][0]))
        where = _range_text(since, until)
        found = sum(1 for f in report.log if f.event_type == event_type and f.found_by == "scan")
        report.notes.append(
            f"not in the dedupe index of log:{event_type} (older than the dedupe window?): "
            f"scanned the newest {scanned} entries{where}; "
            + ("found it" if found else "not found" + (" (scan limit reached)"
                                                        if scanned >= limit else ""))
        )


async def _scan_dlq(redis: Redis, report: AuditReport, limit: int) -> None:
    pattern = re.compile(rb'"event_id"\s*:\s*' + re.escape(_ENCODE(report.event_id)))
    scanned = 0
    async for entry in iter_dead_letters(redis, newest_first=True):
        scanned += 1
        if pattern.search(entry.payload):
            report.dead_letters.append(entry)
        if scanned >= limit:
            break
    if scanned:
        report.notes.append(f"not in the dlq index: scanned the newest {scanned} dead letters; "
                            + ("found" if report.dead_letters else "not found"))


def _finding(event_type: str, entry: Any, found_by: str) -> LogFinding:
    entry_id, fields = entry
    body = _field(fields, "event") or b"{}"
    try:
        event = msgspec.json.decode(body)
    except msgspec.DecodeError:
        event = {"undecodable": body.decode(errors="replace")}
    origin = _field(fields, "origin")
    return LogFinding(event_type, _text(entry_id), _text(origin or b""),
                      event if isinstance(event, dict) else {"value": event}, found_by)


def _field(fields: list[Any], name: str) -> bytes | None:
    for index in range(0, len(fields) - 1, 2):
        if _text(fields[index]) == name:
            value = fields[index + 1]
            return value.encode() if isinstance(value, str) else value
    return None


def _before(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    if int(seq) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-18446744073709551615" if int(ms) > 0 else "0-0"


def _range_text(since: datetime | None, until: datetime | None) -> str:
    parts = []
    if since is not None:
        parts.append(f"from {since.astimezone(UTC).isoformat()}")
    if until is not None:
        parts.append(f"before {until.astimezone(UTC).isoformat()}")
    return f" ({' '.join(parts)})" if parts else ""


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def kafka_timestamp(settings: Settings, coordinates: KafkaCoordinates,
                          timeout_s: float = 5.0) -> int | None:
    """Return the Kafka timestamp (ms) of the message at ``coordinates``, None if gone.

    ``settings`` name the Kafka (``kafka_url``).
    """
    from aiokafka import TopicPartition

    from silvertine_streams.kafka.clients import kafka_consumer

    tp = TopicPartition(coordinates.topic, coordinates.partition)
    # One record wanted: the shortest fetch wait, whatever the worker's setting.
    consumer = kafka_consumer(settings, role="audit", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, coordinates.offset)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
            for record in batch.get(tp, []):
                return record.timestamp if record.offset == coordinates.offset else None
        return None
    finally:
        await consumer.stop()


def render_audit(report: AuditReport) -> str:
    """Describe a report in plain text, one fact per line."""
    lines = [f"event {report.event_id}: {report.status}"]
    if report.found:
        lines.append(f"  ingress:      {report.ingress}")
    for finding in report.log:
        coordinates = finding.kafka
        lines.append(f"  log:          log:{finding.event_type} entry {finding.entry_id} "
                     f"(found by {finding.found_by})")
        lines.append(f"  processed at: {finding.logged_at.isoformat()} (log entry time)")
        if coordinates is not None:
            index = ("" if coordinates.index is None
                     else f", item {coordinates.index} of the message")
            lines.append(f"  kafka:        {coordinates.topic} partition {coordinates.partition} "
                         f"offset {coordinates.offset}{index}")
        else:
            lines.append(f"  origin:       {finding.origin}")
        event = finding.event
        if "timestamp" in event:
            lines.append(f"  event time:   {event['timestamp']}")
        if isinstance(event.get("ts_ns"), int):
            ingested = datetime.fromtimestamp(event["ts_ns"] / 1e9, tz=UTC)
            delay_ms = (finding.logged_at - ingested).total_seconds() * 1000
            lines.append(f"  ingested at:  {ingested.isoformat()} "
                         f"(ts_ns; logged {delay_ms:.0f} ms later)")
        if "sequence" in event:
            lines.append(f"  sequence:     {event['sequence']} (source {event.get('source')!r})")
    if report.kafka_timestamp_ms is not None:
        produced = datetime.fromtimestamp(report.kafka_timestamp_ms / 1000, tz=UTC)
        lines.append(f"  kafka time:   {produced.isoformat()} (message timestamp)")
    for dedupe in report.dedupe:
        expiry = ("no expiry" if dedupe.expires_in_s is None
                  else f"expires in {dedupe.expires_in_s / 3600:.1f} h")
        lines.append(f"  dedupe:       {dedupe.key} fingerprint {dedupe.fingerprint} ({expiry}); "
                     "a redelivery with this id is dropped, other content under it is an "
                     "id_conflict dead letter")
    for letter in report.dead_letters:
        lines.append(f"  dead letter:  dlq entry {letter.entry_id} at {letter.at.isoformat()}")
        lines.append(f"    reason:     {letter.reason}")
        lines.append(f"    origin:     {letter.origin}")
    for dlq_entry, ingress_entry in report.requeues:
        lines.append(f"  requeued:     dlq entry {dlq_entry} -> {ingress_entry}")
    lines.extend(f"  note:         {note}" for note in report.notes)
    return "\n".join(lines)
