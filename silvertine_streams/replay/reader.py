"""Read the canonical log ``log:<type>`` page by page, fast: the replay source.

A page is one ``XRANGE … COUNT n`` (5,000 entries by default) decoded with one
msgspec call for the whole page. Two costs dominate reading a Redis stream from
Python, and both are avoided here:

* redis-py turns every entry's field list into a dict in pure Python; the
  reader uses a client of its own on the caller's connection pool with that
  reply callback switched off, and picks the ``event`` field itself.
* The cyclic garbage collector runs every few hundred allocations and walks
  the page being built each time; reading and decoding a page hold it off
  (events are ``gc=False`` structs and hold no cycles). While the next page is
  read ahead, that includes the caller's work on the current one; the
  collector runs again between pages, so garbage waits one page at most.

With the C reply parser (``pip install hiredis``; redis-py uses it when present)
this reads 200k+ events/s; without it redis-py's pure-Python parser caps it
near 30k events/s.

Entry ids start with the Redis server time in ms when the sink wrote the entry
(``<ms>-<seq>``); time ranges given to the reader select on that *log time*.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from silvertine_streams.errors import InvalidEvent
from silvertine_streams.events import Event, EventUnion, decode_event
from silvertine_streams.topics import log_stream

PAGE_SIZE = 5000
"""Entries per XRANGE: big enough to amortise a round trip, small enough that one
read holds Redis for only a few milliseconds."""

_PAGE_DECODER = msgspec.json.Decoder(list[EventUnion])
_EVENT_FIELD = b"event"


@dataclass(slots=True)
class LogPage:
    """One page of a canonical log.

    Attributes:
        event_type: the log's event type.
        entry_ids: the entry ids, in log order (``"<ms>-<seq>"``).
        events: the decoded events, aligned with ``entry_ids``.
        undecodable: ``(entry id, reason)`` of entries that hold no valid event
            (written by something other than the sink); they are skipped.
        next_start: the id to continue from, or None when the range is done.
    """

    event_type: str
    entry_ids: list[str]
    events: list[Event]
    undecodable: list[tuple[str, str]] = field(default_factory=list)
    next_start: str | None = None


def ms_to_entry_id(ms: int) -> str:
    """Return the first stream id at or after ``ms`` milliseconds."""
    return f"{max(ms, 0)}-0"


def datetime_to_ms(moment: datetime) -> int:
    """Return ``moment`` as ms since the epoch (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def entry_ms(entry_id: str | bytes) -> int:
    """Return the log time (ms since the epoch) of a stream entry id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def entry_datetime(entry_id: str | bytes) -> datetime:
    """Return the log time of a stream entry id as an aware UTC datetime."""
    return datetime.fromtimestamp(entry_ms(entry_id) / 1000, tz=UTC)


def following_id(entry_id: str) -> str:
    """Return the smallest stream id after ``entry_id`` (exclusive ranges on Redis < 6.2)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def id_range(since: datetime | None, until: datetime | None) -> tuple[str, str]:
    """Return XRANGE bounds selecting log time ``since <= t < until``."""
    start = ms_to_entry_id(datetime_to_ms(since)) if since is not None else "-"
    if until is None:
        return start, "+"
    end_ms = datetime_to_ms(until) - 1
    # An end id without a sequence means "the last entry of that millisecond".
    return start, (str(end_ms) if end_ms >= 0 else "0-0")


def raw_client(redis: Redis) -> Redis:
    """Return a client on ``redis``'s connection pool whose XRANGE/XREVRANGE replies stay raw."""
    raw = Redis(connection_pool=redis.connection_pool)
    raw.set_response_callback("XRANGE", _identity)
    raw.set_response_callback("XREVRANGE", _identity)
    return raw


def _identity(response: Any, **options: Any) -> Any:
    return response


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the cyclic GC off while a page is built (see the module docstring)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def read_pages(
    redis: Redis,
    event_type: str,
    start: str = "-",
    end: str = "+",
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[LogPage]:
    """Yield the log of ``event_type`` from ``start`` to ``end`` (ids, inclusive), page by page.

    Args:
        redis: any asyncio client; its connection pool is reused.
        event_type: whose log to read.
        start: first entry id (``"-"`` = the beginning).
        end: last entry id (``"+"`` = the end as of each read; entries appended
            while reading are included).
        page_size: entries per XRANGE.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    raw = raw_client(redis)
    key = log_stream(event_type)

    async def fetch(cursor: str) -> list[Any]:
        # The reply parser allocates two lists per entry: hold the collector off here too.
        with collector_paused():
            reply: list[Any] = await raw.execute_command(
                "XRANGE", key, cursor, end, "COUNT", page_size)
        return reply

    # The next page is read while the caller works through the current one.
    pending: asyncio.Task[list[Any]] | None = asyncio.ensure_future(fetch(start))
    try:
        while pending is not None:
            reply = await pending
            pending = None
            if not reply:
                return
            page = decode_page(event_type, reply)
            if len(reply) == page_size:
                page.next_start = following_id(_text(reply[-1][0]))
                pending = asyncio.ensure_future(fetch(page.next_start))
            yield page
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending


def decode_page(event_type: str, reply: list[Any]) -> LogPage:
    """Decode one raw XRANGE reply (``[[id, [field, value, ...]], ...]``) into a page."""
    with collector_paused():
        entry_ids = [_text(entry_id) for entry_id, _ in reply]
        bodies = [_event_field(fields) for _, fields in reply]
        if all(bodies):
            try:
                events: list[Event] = list(_PAGE_DECODER.decode(_join(bodies)))
            except msgspec.DecodeError:
                pass  # a foreign entry somewhere: find it below, keep the rest
            else:
                return LogPage(event_type, entry_ids, events)
        return _decode_each(event_type, entry_ids, bodies)


def _decode_each(event_type: str, entry_ids: list[str], bodies: list[bytes | None]) -> LogPage:
    page = LogPage(event_type, [], [])
    for entry_id, body in zip(entry_ids, bodies, strict=True):
        if not body:
            page.undecodable.append((entry_id, "entry has no 'event' field"))
            continue
        try:
            # The codec's own decoder, which also reads entries the engine wrote
            # before the platform contract (a fill's executed_qty, ...).
            event = decode_event(body)
        except InvalidEvent as exc:
            page.undecodable.append((entry_id, exc.reason))
            continue
        page.entry_ids.append(entry_id)
        page.events.append(event)
    return page


def _event_field(fields: list[Any]) -> bytes | None:
    # The sink writes `event` first; other writers may order fields differently.
    if fields and fields[0] in (_EVENT_FIELD, "event"):
        return _bytes(fields[1])
    for index in range(0, len(fields) - 1, 2):
        if fields[index] in (_EVENT_FIELD, "event"):
            return _bytes(fields[index + 1])
    return None


def _join(bodies: list[Any]) -> bytes:
    return b"[" + b",".join(bodies) + b"]"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def mark_replayed(events: list[Event], entry_ids: list[str]) -> None:
    """Mark freshly decoded events as replays of their log entries, in place.

    Sets ``metadata["replay"] = True`` and ``metadata["replayed_from"] = <entry id>``.
    Safe only on events this module decoded: each owns its metadata dict.
    """
    for event, entry_id in zip(events, entry_ids, strict=True):
        metadata = event.metadata
        metadata["replay"] = True
        metadata["replayed_from"] = entry_id


async def log_bounds(redis: Redis, event_type: str) -> tuple[int, str | None, str | None]:
    """Return ``(length, first id, last id)`` of ``log:<type>`` (ids None when empty)."""
    raw = raw_client(redis)
    key = log_stream(event_type)
    pipe = raw.pipeline(transaction=False)
    pipe.xlen(key)
    pipe.execute_command("XRANGE", key, "-", "+", "COUNT", 1)
    pipe.execute_command("XREVRANGE", key, "+", "-", "COUNT", 1)
    length, first, last = await pipe.execute()
    return (
        int(length),
        _text(first[0][0]) if first else None,
        _text(last[0][0]) if last else None,
    )


Clock = Callable[[Event, str], float]
"""Returns the replay clock of an event, in seconds (its timestamp or its log time)."""


def event_clock(event: Event, entry_id: str) -> float:
    """The event's own ``timestamp``, in seconds since the epoch."""
    return event.timestamp.timestamp()


def log_clock(event: Event, entry_id: str) -> float:
    """The time the canonical log received the event (its entry id), in seconds."""
    ms, _, seq = entry_id.partition("-")
    # The sequence keeps entries of one millisecond in log order when merging.
    return int(ms) / 1000 + int(seq or 0) * 1e-9
