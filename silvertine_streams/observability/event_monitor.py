"""``EventMonitor``: the platform's Python face on event flow, replay and audit.

Thin over what the engine already has:

* :meth:`EventMonitor.get_event_flow_metrics` reads each canonical log
  ``log:<type>`` (length, oldest and newest entry, the rate over the last
  minute, the log's consumer groups) in one pipelined round trip, plus the
  bus's own :meth:`~silvertine_streams.handlers.EventBus.get_metrics`.
* :meth:`~EventMonitor.replay_events` is :func:`silvertine_streams.replay.replay`
  with the bus as its sink (events marked ``metadata["replay"]``).
* :meth:`~EventMonitor.create_event_audit_trail` is the audit's lookup through
  the log's dedupe index (:func:`silvertine_streams.ops.audit.logged_entries`):
  no scan of the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypedDict

import msgspec

from silvertine_streams.events import Event, EventType
from silvertine_streams.handlers.bus import BusMetrics, EventBus
from silvertine_streams.ops.audit import logged_entries
from silvertine_streams.redis.streams import RedisStreamManager
from silvertine_streams.replay import ReplayError, ReplayProgress, replay
from silvertine_streams.replay.reader import entry_datetime, entry_ms, raw_client
from silvertine_streams.topics import EVENT_TYPES, log_stream

__all__ = ["AuditEntry", "EventMonitor", "LogFlow", "ReplayReport"]

RATE_WINDOW_MS = 60_000
RATE_SAMPLE = 500
"""Log entries read at most to measure the rate: above this many per minute the
rate is extrapolated from the newest ones (the read stays small)."""


class AuditEntry(TypedDict):
    """One canonical-log entry of an event.

    Attributes:
        stream_id: the log entry id.
        timestamp: the event's own ``timestamp`` (ISO-8601 UTC).
        published_at: when the canonical log received it (the entry id's time).
        processor: where the engine read it (the entry's ``origin``):
            ``silvertine.<type>/<partition>/<offset>#<index>`` for a worker,
            ``events:<type>/<entry id>#<index>`` for the ``EventProcessor``.
        data: the logged event, as JSON-decoded dict.
    """

    stream_id: str
    timestamp: str | None
    published_at: datetime
    processor: str
    data: dict[str, Any]


class LogFlow(TypedDict):
    """The flow of one event type through its canonical log.

    Attributes:
        stream_length: entries in ``log:<type>``.
        first_event: its oldest entry (None when empty).
        last_event: its newest entry (None when empty).
        current_rate_per_min: entries logged in the last minute.
        consumer_groups: the Redis consumer groups of the log, each with
            ``name``, ``consumers``, ``pending``, ``last_delivered_id``.
            (Workers' handler groups follow the log with a cursor, not a group.)
    """

    stream_length: int
    first_event: AuditEntry | None
    last_event: AuditEntry | None
    current_rate_per_min: float
    consumer_groups: list[dict[str, Any]]


class ReplayReport(TypedDict):
    """The progress of a replay onto the bus (final once ``completed_at`` is set).

    Attributes:
        event_type: the type replayed.
        start_time: first log time included (None = the beginning).
        end_time: log time stopped before (None = the end).
        speed: the speed multiplier (0 = as fast as possible).
        events_replayed: events published on the bus.
        events_filtered: events left out by the filter.
        started_at: when the replay started.
        completed_at: when it ended (None while it runs).
        duration: seconds from start to end (so far, while it runs).
    """

    event_type: str
    start_time: datetime | None
    end_time: datetime | None
    speed: float
    events_replayed: int
    events_filtered: int
    started_at: datetime
    completed_at: datetime | None
    duration: float


class EventMonitor:
    """Event flow metrics, replays onto the bus and audit trails, over the canonical logs.

    Args:
        redis_manager: the connection (must be connected before use).
        event_bus: the bus whose metrics are reported and replays go to.
        dedupe_window_s: the log sinks' dedupe window (names the index
            buckets the audit reads); default the settings'.
        clock: wall-clock seconds (the rate's window; inject in tests).
    """

    def __init__(self, redis_manager: RedisStreamManager, event_bus: EventBus, *,
                 dedupe_window_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.manager = redis_manager
        self.bus = event_bus
        self._window_s = (dedupe_window_s if dedupe_window_s is not None
                          else redis_manager.settings.dedupe_window_s)
        self._clock = clock
        self._replay: ReplayReport | None = None

    @property
    def replay_progress(self) -> ReplayReport | None:
        """The running replay's progress (None when none runs)."""
        return None if self._replay is None else dict(self._replay)  # type: ignore[return-value]  # a copy of the same TypedDict

    async def get_event_flow_metrics(self) -> dict[str, Any]:
        """Return a :class:`LogFlow` per event type value, and ``"event_bus"``: the bus metrics."""
        raw = raw_client(self.manager.redis)
        since = f"{int(self._clock() * 1000) - RATE_WINDOW_MS}-0"
        pipe = raw.pipeline(transaction=False)
        for name in EVENT_TYPES:
            key = log_stream(name)
            pipe.xlen(key)
            pipe.execute_command("XRANGE", key, "-", "+", "COUNT", 1)
            pipe.execute_command("XREVRANGE", key, "+", "-", "COUNT", 1)
            pipe.execute_command("XREVRANGE", key, "+", since, "COUNT", RATE_SAMPLE)
            pipe.execute_command("XINFO", "GROUPS", key)
        replies = await pipe.execute(raise_on_error=False)
        metrics: dict[str, Any] = {}
        for index, name in enumerate(EVENT_TYPES):
            length, first, last, recent, groups = replies[index * 5: index * 5 + 5]
            flow: LogFlow = {
                "stream_length": int(length) if isinstance(length, int) else 0,
                "first_event": _audit_entry(first[0]) if _entries(first) else None,
                "last_event": _audit_entry(last[0]) if _entries(last) else None,
                "current_rate_per_min": _rate(recent, self._clock()),
                "consumer_groups": _groups(groups),
            }
            metrics[name] = flow
        bus_metrics: BusMetrics = self.bus.get_metrics()
        metrics["event_bus"] = bus_metrics
        return metrics

    async def replay_events(
        self,
        event_type: EventType | str,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        speed_multiplier: float = 1.0,
        filter_predicate: Callable[[Event], bool] | str | None = None,
    ) -> ReplayReport:
        """Replay ``log:<type>`` onto the bus; return the final progress.

        Events are paced by their ``timestamp`` gaps divided by
        ``speed_multiplier`` (1 = real time, 0 = as fast as possible) and
        published with :meth:`~silvertine_streams.handlers.EventBus.publish_replayed`
        (marked ``metadata["replay"]``; the bus's id window does not drop them).

        Args:
            event_type: whose log.
            start_time: first log time included (None = the beginning).
            end_time: log time to stop before (None = the end).
            speed_multiplier: >= 0.
            filter_predicate: only events for which it returns True (or a
                filter expression such as ``'symbol == "BTC/USD"'``).

        Raises:
            ReplayError: a replay is already running, the type is unknown, or
                the speed is negative.
            InvalidFilter: ``filter_predicate`` is an invalid expression.
        """
        if self._replay is not None:
            raise ReplayError(f"a replay of {self._replay['event_type']} is running; "
                              "one replay at a time")
        name = event_type.value if isinstance(event_type, EventType) else str(event_type)
        if speed_multiplier < 0:
            raise ReplayError(f"speed_multiplier must be >= 0, got {speed_multiplier}")
        started = time.monotonic()
        report: ReplayReport = {
            "event_type": name, "start_time": start_time, "end_time": end_time,
            "speed": float(speed_multiplier), "events_replayed": 0, "events_filtered": 0,
            "started_at": datetime.now(UTC), "completed_at": None, "duration": 0.0,
        }
        self._replay = report

        def on_progress(progress: ReplayProgress) -> None:
            report["events_replayed"] = progress.replayed
            report["events_filtered"] = progress.filtered
            report["duration"] = time.monotonic() - started

        async def to_bus(event: Event) -> None:
            await self.bus.publish_replayed(event)

        try:
            summary = await replay(
                self.manager.redis, [name], start_time, end_time, where=filter_predicate,
                speed="max" if speed_multiplier == 0 else float(speed_multiplier),
                to=to_bus, on_progress=on_progress,
            )
        finally:
            self._replay = None
        report["events_replayed"] = summary.replayed
        report["events_filtered"] = summary.filtered
        report["completed_at"] = datetime.now(UTC)
        report["duration"] = time.monotonic() - started
        return report

    async def create_event_audit_trail(self, event_id: str,
                                       event_type: EventType | str) -> list[AuditEntry]:
        """Return the canonical-log entries of ``event_id`` in ``log:<type>``, oldest first.

        Found through the log's dedupe index (no scan): an event logged longer
        ago than the dedupe window gives ``[]`` (``silvertine audit`` can scan).
        """
        name = event_type.value if isinstance(event_type, EventType) else str(event_type)
        if name not in EVENT_TYPES:
            raise ValueError(f"unknown event type {name!r}; types: {', '.join(EVENT_TYPES)}")
        findings = await logged_entries(self.manager.redis, event_id, [name],
                                        window_s=self._window_s, now=self._clock)
        trail = [AuditEntry(stream_id=f.entry_id, timestamp=_str(f.event.get("timestamp")),
                            published_at=f.logged_at, processor=f.origin, data=f.event)
                 for f in findings]
        return sorted({t["stream_id"]: t for t in trail}.values(),
                      key=lambda t: entry_ms(t["stream_id"]))


def _entries(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply)


def _audit_entry(entry: Any) -> AuditEntry:
    """An entry of a raw XRANGE reply as an :class:`AuditEntry`."""
    entry_id, fields = entry
    values = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
    try:
        data = msgspec.json.decode(values.get("event", b"{}"))
    except msgspec.DecodeError:
        data = {"undecodable": _text(values.get("event", b""))}
    if not isinstance(data, dict):
        data = {"value": data}
    stream_id = _text(entry_id)
    return AuditEntry(stream_id=stream_id, timestamp=_str(data.get("timestamp")),
                      published_at=entry_datetime(stream_id),
                      processor=_text(values.get("origin", b"")), data=data)


def _rate(reply: Any, now_s: float) -> float:
    """Entries per minute from the newest entries of the last minute (extrapolated when capped)."""
    if not _entries(reply):
        return 0.0
    if len(reply) < RATE_SAMPLE:
        return float(len(reply))
    span_ms = max(now_s * 1000 - entry_ms(_text(reply[-1][0])), 1.0)
    return len(reply) * RATE_WINDOW_MS / span_ms


def _groups(reply: Any) -> list[dict[str, Any]]:
    """XINFO GROUPS (raw: a flat field list per group) as dicts; [] for a missing log."""
    if not isinstance(reply, list):
        return []
    groups = []
    for group in reply:
        if isinstance(group, dict):
            fields = {_text(k): v for k, v in group.items()}
        else:
            fields = {_text(group[i]): group[i + 1] for i in range(0, len(group) - 1, 2)}
        groups.append({"name": _text(fields.get("name", b"")),
                       "consumers": int(fields.get("consumers", 0)),
                       "pending": int(fields.get("pending", 0)),
                       "last_delivered_id": _text(fields.get("last-delivered-id", b""))})
    return groups


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
