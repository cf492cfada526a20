"""A handler group's durable position on the canonical logs, kept in Redis.

The position is a cursor per event type: the id of the last entry of
``log:<type>`` whose handlers all ran (``handlers:<app id>:cursor``). The group
reads the entries after it, runs the handlers, and only then moves the cursor
past them. So whatever a crash interrupts lies after the cursor, and the next
holder reads it again: at least once. A cursor costs one ``HSET`` per batch;
a Redis consumer group (measured first) also kept a pending-list entry per
event, which cost Redis about 3 µs per event on read and acknowledgement, for
nothing a single reader needs.

One worker at a time holds the group (a lease, ``lease:handlers:<app id>``,
like the ingress mirror's), which keeps each symbol's events in log order for
handlers. Every write made under the lease — moving a cursor, an idempotent
handler's record — is *fenced*: the script checks that the lease still names
this worker, so a worker that stalled past its lease cannot move the cursor
over what its successor is redoing.

Reads are plain ``XREAD`` calls after the cursor. An entry's event is taken from
:class:`~silvertine_streams.handlers.recent.RecentlyLogged` when this worker
logged it (no second decode); the others are decoded together, in one call.
(A script returning the page's JSON already joined cost Redis ~6 µs per event,
against under 1 µs for ``XREAD``.)

Idempotent handlers' records live in ``handlers:<app id>:done:<type>`` only
until the cursor passes their entry (in the same script): the hash holds at
most one batch per type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis

from silvertine_streams.errors import LeaseLost
from silvertine_streams.events import Event, EventUnion
from silvertine_streams.handlers.effects import RedisArg
from silvertine_streams.handlers.recent import RecentlyLogged
from silvertine_streams.redis.lease import Lease
from silvertine_streams.replay.reader import decode_page, raw_client
from silvertine_streams.sinks.retry import Backoff, retry_transient
from silvertine_streams.topics import (
    handler_completions,
    handler_cursor,
    handler_group,
    handler_lease,
    handler_progress,
    log_followers,
    log_stream,
)

__all__ = ["Batch", "GroupCompletions", "GroupPosition", "completion_field"]

START = "0-0"
"""The cursor of a group that has handled nothing: the whole log lies after it."""

# KEYS: lease, cursor hash, progress hash, completions hash.
# ARGV: holder, event type, new cursor, entries passed, lease ms, then the
# completion fields to drop.
_ADVANCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[2], ARGV[4])
for s = 6, #ARGV, 1000 do
  redis.call('HDEL', KEYS[4], unpack(ARGV, s, math.min(s + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: lease, completions hash. ARGV: holder, field, then the staged commands,
# each as its argument count followed by its arguments. A retry whose first
# attempt landed (its reply lost) finds the record and runs nothing again.
_COMPLETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[2], '1') == 0 then return 0 end
local refused = 0
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local reply = redis.pcall(unpack(ARGV, i + 1, i + n))
  if type(reply) == 'table' and reply.err then refused = refused + 1 end
  i = i + n + 1
end
return refused
"""

_PAGE = msgspec.json.Decoder(list[EventUnion])
"""Decodes a page of events, joined into one JSON array, in one call."""
_EVENT = b"event"
_ORIGIN = b"origin"


class Batch(NamedTuple):
    """Log entries read after a cursor.

    Attributes:
        last_id: the id of the last entry read (the cursor once they are handled).
        events: the events, in log order.
        entries: how many entries were read (events plus entries that are not events).
        skipped: the ids and reasons of entries that are not events.
    """

    last_id: str
    events: list[Event]
    entries: int
    skipped: list[tuple[str, str]]


def _identity(response: Any, **options: Any) -> Any:
    return response


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class GroupPosition:
    """The Redis side of one app's handler group: lease, cursors, reads.

    Args:
        redis: an asyncio client (bytes replies); its pool is shared.
        app_id: the app whose handler group this is.
        holder: this worker's name in the lease.
        lease_ms: how long a silent holder keeps the group.
        retry_max_s: the cap on the delay between retries of a fenced write.
    """

    def __init__(self, redis: Redis, app_id: str, holder: str, lease_ms: int = 5000,
                 retry_max_s: float = 2.0) -> None:
        self.app_id = app_id
        self.group = handler_group(app_id)
        self.lease = handler_lease(app_id)
        self.cursors = handler_cursor(app_id)
        self.progress = handler_progress(app_id)
        self.holder = holder
        self.lease_ms = lease_ms
        self._redis = redis
        self._raw = raw_client(redis)
        self._raw.set_response_callback("XREAD", _identity)
        self._lease = Lease(redis, self.lease, holder, lease_ms)
        self._advance = redis.register_script(_ADVANCE)
        self._complete = redis.register_script(_COMPLETE)
        self._backoff = Backoff(initial_s=min(0.05, retry_max_s), max_s=retry_max_s)

    # --- the lease ------------------------------------------------------------

    async def hold(self) -> bool:
        """Take or renew the lease; return whether this worker holds it now."""
        return await self._lease.hold()

    async def release(self) -> None:
        """Give the lease up (if still ours), so a successor need not wait it out."""
        await self._lease.release()

    # --- reading ----------------------------------------------------------------

    async def follow(self, event_type: str) -> None:
        """Register the group as a reader of ``log:<type>``, so retention never trims past it.

        Adds the app id to ``handlers:followers:<type>``; the group stays a reader
        until an operator forgets it (``silvertine handlers forget``), however long
        it is stopped; forgotten, it registers again here and starts from the
        start of what the log still holds (it has no cursor any more).
        """
        await self._redis.sadd(log_followers(event_type), self.app_id)

    async def cursor(self, event_type: str) -> str:
        """Return the id of the last entry of ``log:<type>`` the group finished."""
        value = await self._redis.hget(self.cursors, event_type)
        return START if value is None else _text(value)

    async def read(self, event_type: str, after: str, count: int, block_ms: int,
                   recent: RecentlyLogged | None = None) -> Batch:
        """Return up to ``count`` entries after ``after``, waiting up to ``block_ms`` for one.

        Args:
            event_type: whose log.
            after: the cursor (exclusive).
            count: entries at most.
            block_ms: how long to wait when there is none yet (0: do not wait).
            recent: events this worker logged, taken instead of decoded.
        """
        reply: Any = await self._raw.execute_command(
            "XREAD", "COUNT", count, *(("BLOCK", block_ms) if block_ms > 0 else ()),
            "STREAMS", log_stream(event_type), after)
        if not reply:
            return Batch(after, [], 0, [])
        # RESP2: [[stream, entries]]; RESP3: {stream: entries}.
        entries: list[Any] = (next(iter(reply.values())) if isinstance(reply, dict)
                              else reply[0][1])
        return _batch(event_type, entries, recent)

    async def last_id(self, event_type: str) -> str:
        """Return the id of the newest entry of ``log:<type>`` (the start when it is empty)."""
        newest = await self._redis.xrevrange(log_stream(event_type), count=1)
        entry_id = newest[0][0] if newest else None
        return START if entry_id is None else _text(entry_id)

    # --- moving on ----------------------------------------------------------------

    async def advance(self, event_type: str, batch: Batch, cleared: Sequence[str] = ()) -> None:
        """Move the cursor past ``batch`` and drop its completion records, fenced by the lease.

        Retries a Redis outage until it lands (the group holds still meanwhile).

        Raises:
            LeaseLost: another worker holds the lease; the cursor did not move.
        """
        keys = [self.lease, self.cursors, self.progress,
                handler_completions(self.app_id, event_type)]
        args: list[RedisArg] = [self.holder, event_type, batch.last_id, batch.entries,
                                self.lease_ms, *cleared]
        moved = int(await retry_transient(partial(self._advance, keys=keys, args=args),
                                          self._backoff, name=self.group))
        if moved < 0:
            raise LeaseLost(self.lease, self.holder)

    async def lag(self, event_type: str) -> int:
        """Return the log entries of ``event_type`` the group has not finished yet."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(log_stream(event_type))
        pipe.hget(self.progress, event_type)
        length, done = await pipe.execute()
        return max(0, int(length) - int(done or 0))

    # --- idempotent handlers' records ----------------------------------------------

    async def completions(self, event_type: str) -> GroupCompletions:
        """Return the records of the type's idempotent handlers, as a predecessor left them."""
        fields = await self._redis.hkeys(handler_completions(self.app_id, event_type))
        return GroupCompletions(self, event_type, {_text(f) for f in fields})

    async def _record(self, event_type: str, field: str,
                      commands: Iterable[Sequence[RedisArg]]) -> int:
        args: list[RedisArg] = [self.holder, field]
        for command in commands:
            args.append(len(command))
            args.extend(command)
        keys = [self.lease, handler_completions(self.app_id, event_type)]
        refused = int(await retry_transient(partial(self._complete, keys=keys, args=args),
                                            self._backoff, name=self.group))
        if refused < 0:
            raise LeaseLost(self.lease, self.holder)
        return refused



def _batch(event_type: str, entries: list[Any], recent: RecentlyLogged | None) -> Batch:
    """Turn raw log entries into a batch: events from ``recent`` where it has them."""
    events: list[Event | None] = []
    missing: list[int] = []
    bodies: list[bytes] = []
    take = recent.take if recent is not None and len(recent) else None
    for fields in [entry[1] for entry in entries]:
        # The sink writes [event, <json>, origin, <origin>]; other writers may differ.
        if len(fields) == 4 and fields[0] == _EVENT and fields[2] == _ORIGIN:
            body, origin = fields[1], fields[3]
        else:
            found = dict(zip(fields[::2], fields[1::2], strict=False))
            body, origin = found.get(_EVENT), found.get(_ORIGIN)
        event = take(_text(origin)) if take is not None and origin is not None else None
        if event is None:
            missing.append(len(events))
            bodies.append(body or b"")
        events.append(event)
    skipped: list[tuple[str, str]] = []
    if missing:
        try:
            decoded: list[Event] = list(_PAGE.decode(b"[" + b",".join(bodies) + b"]"))
        except msgspec.DecodeError:
            # An entry that is not an event: sort them out one by one.
            page = decode_page(event_type, [entries[i] for i in missing])
            by_id = dict(zip(page.entry_ids, page.events, strict=True))
            decoded = []
            for i in missing:
                entry_id = _text(entries[i][0])
                event = by_id.get(entry_id)
                if event is not None:
                    decoded.append(event)
            skipped = page.undecodable
            keep = set(by_id)
            missing = [i for i in missing if _text(entries[i][0]) in keep]
        for i, event in zip(missing, decoded, strict=True):
            events[i] = event
    return Batch(_text(entries[-1][0]), [e for e in events if e is not None], len(entries),
                 skipped)


def completion_field(handler_name: str, event_id: str) -> str:
    """Return the completions-hash field of one handler and one event."""
    return f"{handler_name}|{event_id}"


class GroupCompletions:
    """Which idempotent handler completed which event (see :mod:`.effects`).

    Holds what earlier holders recorded (only the batch a crash interrupted can
    have any) and records this holder's calls, each with its staged writes.
    """

    def __init__(self, position: GroupPosition, event_type: str, done: set[str]) -> None:
        self._position = position
        self._event_type = event_type
        self._done = done

    def completed(self, handler_name: str, event_id: str) -> bool:
        """Return whether ``handler_name`` completed ``event_id`` before."""
        return bool(self._done) and completion_field(handler_name, event_id) in self._done

    def forget(self, fields: Iterable[str]) -> None:
        """Drop records the cursor has passed (they can never be asked for again)."""
        self._done.difference_update(fields)

    async def complete(self, handler_name: str, event_id: str,
                       commands: list[tuple[RedisArg, ...]]) -> int:
        """Record the call and run ``commands``, in one fenced script; return how many failed.

        Raises:
            LeaseLost: another worker holds the lease; nothing was recorded or run.
        """
        refused = await self._position._record(
            self._event_type, completion_field(handler_name, event_id), commands)
        return refused
