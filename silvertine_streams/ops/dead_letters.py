"""Work with the dead-letter stream ``dlq``: list, requeue, purge.

* **list** reads entries (optionally by reason) with what can be read from the
  payload: its ``event_type`` and ``event_id``.
* **requeue** re-submits payloads to the ingress stream ``events:<type>`` of
  the type the payload names. One Lua call per batch adds the ingress entry and
  only then deletes the dead letter, atomically: a requeue is never lost half
  way. A payload that fails again comes back to ``dlq`` with its new reason
  (origin ``events:<type>/<entry id>``). A payload without ``event_id`` gets a
  stable one (``requeued:<origin>:<digest of the payload>``), so requeueing
  two copies of one letter (dead letters are at least once) logs it once.
  Payloads whose type cannot be read stay in ``dlq``; the result says why.
  :func:`select_letters` chooses without changing anything (what the command
  shows before it asks), :func:`requeue_entries` then requeues exactly those.
* **purge** deletes entries older than a time, with the index kept in step.

Deleting keeps the ``dlq:ids`` index (event id -> entry ids) consistent, and a
requeue records ``event_id -> "<dlq entry> events:<type>/<new entry>"`` in
``dlq:requeued`` for ``silvertine audit``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from silvertine_streams.replay.dead_letters import (
    PAGE,
    DeadLetterEntry,
    iter_dead_letters,
    parse_entry,
    reason_matches,
    text,
)
from silvertine_streams.replay.reader import datetime_to_ms, raw_client
from silvertine_streams.topics import (
    DLQ_INDEX,
    DLQ_REQUEUED,
    DLQ_STREAM,
    EVENT_TYPES,
    ingress_stream,
)

_ENCODE_ID = msgspec.json.Encoder().encode

# Shared by requeue and purge: drop one entry id from an event's index value.
_UNINDEX = """
local function unindex(index, event_id, entry)
  if event_id == '' then return end
  local known = redis.call('HGET', index, event_id)
  if not known then return end
  local kept = {}
  for token in string.gmatch(known, '%S+') do
    if token ~= entry then kept[#kept + 1] = token end
  end
  if #kept == 0 then redis.call('HDEL', index, event_id)
  else redis.call('HSET', index, event_id, table.concat(kept, ' ')) end
end
"""

# KEYS: dlq, dlq:ids, dlq:requeued, then the ingress streams of EVENT_TYPES.
# ARGV: per letter: dlq entry id, 1-based type index (into KEYS[3 + i]), payload,
# the event id the index knows it by ('' = none), the event id it is requeued as.
# Returns the new ingress entry id per letter, or '' when the letter was gone.
_REQUEUE = _UNINDEX + """
local out = {}
for i = 1, #ARGV, 5 do
  local entry, stream = ARGV[i], KEYS[3 + tonumber(ARGV[i + 1])]
  local payload, indexed_as, requeued_as = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if #redis.call('XRANGE', KEYS[1], entry, entry) == 0 then
    out[#out + 1] = ''
  else
    local added = redis.call('XADD', stream, '*', 'event', payload)
    redis.call('XDEL', KEYS[1], entry)
    unindex(KEYS[2], indexed_as, entry)
    local note = entry .. ' ' .. stream .. '/' .. added
    local history = redis.call('HGET', KEYS[3], requeued_as)
    if history then note = history .. '; ' .. note end
    redis.call('HSET', KEYS[3], requeued_as, note)
    out[#out + 1] = added
  end
end
return out
"""

# KEYS: dlq, dlq:ids. ARGV: pairs of dlq entry id, event_id. Returns entries deleted.
_PURGE = _UNINDEX + """
local deleted = 0
for i = 1, #ARGV, 2 do
  deleted = deleted + redis.call('XDEL', KEYS[1], ARGV[i])
  unindex(KEYS[2], ARGV[i + 1], ARGV[i])
end
return deleted
"""


@dataclass(slots=True)
class RequeueResult:
    """What a requeue did.

    Attributes:
        requeued: ``(dlq entry id, "events:<type>/<new entry id>", event id)``.
        kept: ``(dlq entry id, why it stays)``.
        missing: ids asked for that are not (or no longer) in ``dlq``.
    """

    requeued: list[tuple[str, str, str]] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RequeueSelection:
    """The dead letters a requeue would take, before anything is changed.

    Attributes:
        entries: the letters chosen, oldest first.
        missing: ids asked for that are not in ``dlq``.
    """

    entries: list[DeadLetterEntry] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def routes(self) -> dict[str, int]:
        """Letters per ingress stream they would go to (``events:<type>``)."""
        counts: dict[str, int] = {}
        for entry in self.entries:
            if entry.event_type is not None:
                stream = ingress_stream(entry.event_type)
                counts[stream] = counts.get(stream, 0) + 1
        return counts

    @property
    def unroutable(self) -> int:
        """Letters chosen that would stay: their event type cannot be read."""
        return sum(entry.event_type is None for entry in self.entries)


async def select_letters(
    redis: Redis, ids: Sequence[str] = (), reason: str | None = None, *, everything: bool = False,
) -> RequeueSelection:
    """Choose the dead letters to requeue: by entry id, by reason, or all; change nothing.

    Args:
        redis: the Redis of the DLQ.
        ids: dlq entry ids.
        reason: every letter whose reason matches (see :func:`reason_matches`);
            with ``ids``, only those of them that match.
        everything: every letter (when neither ``ids`` nor ``reason`` is given).

    Raises:
        ValueError: none of ``ids``, ``reason``, ``everything`` was given.
    """
    if not ids and not reason and not everything:
        raise ValueError("say which letters: entry ids, a reason, or everything")
    selection = RequeueSelection()
    if ids:
        for wanted in dict.fromkeys(ids):
            entry = await _read_one(redis, wanted)
            if entry is None:
                selection.missing.append(wanted)
            elif reason_matches(entry.reason, reason):
                selection.entries.append(entry)
    else:
        async for entry in iter_dead_letters(redis):
            if reason_matches(entry.reason, reason):
                selection.entries.append(entry)
    return selection


async def requeue(
    redis: Redis, ids: Sequence[str] = (), reason: str | None = None, *, everything: bool = False,
) -> RequeueResult:
    """Re-submit dead letters to their ingress stream and delete them from ``dlq``.

    Args:
        redis: the Redis of the DLQ and the ingress streams.
        ids: dlq entry ids to requeue.
        reason: requeue every letter whose reason matches (see :func:`reason_matches`).
        everything: requeue every letter (when neither ``ids`` nor ``reason`` is given).

    Raises:
        ValueError: none of ``ids``, ``reason``, ``everything`` was given.
    """
    selection = await select_letters(redis, ids, reason, everything=everything)
    result = await requeue_entries(redis, selection.entries)
    result.missing[:0] = selection.missing
    return result


async def requeue_entries(redis: Redis, entries: Sequence[DeadLetterEntry]) -> RequeueResult:
    """Requeue exactly these letters (see :func:`select_letters`); one gone since is missing."""
    result = RequeueResult()
    script = redis.register_script(_REQUEUE)
    keys = [DLQ_STREAM, DLQ_INDEX, DLQ_REQUEUED] + [ingress_stream(t) for t in EVENT_TYPES]
    for start in range(0, len(entries), PAGE):
        batch: list[tuple[DeadLetterEntry, str, str]] = []
        args: list[bytes | str | int] = []
        for entry in entries[start:start + PAGE]:
            event_type = entry.event_type
            if event_type is None:
                result.kept.append((entry.entry_id, _why_not_requeued(entry.payload)))
                continue
            payload, event_id = requeue_payload(entry)
            batch.append((entry, event_type, event_id))
            args.extend((entry.entry_id, EVENT_TYPES.index(event_type) + 1,
                         payload, entry.event_id or "", event_id))
        if not batch:
            continue
        added = await script(keys=keys, args=args)
        for (entry, event_type, event_id), new_id in zip(batch, added, strict=True):
            new_text = text(new_id)
            if new_text:
                result.requeued.append(
                    (entry.entry_id, f"{ingress_stream(event_type)}/{new_text}", event_id))
            else:
                result.missing.append(entry.entry_id)
    return result


def requeue_payload(entry: DeadLetterEntry) -> tuple[bytes, str]:
    """Return the payload to re-submit and its event id.

    A payload with an ``event_id`` goes as it is. One without gets
    ``requeued:<origin>:<16 hex of the payload's digest>`` inserted, so every
    copy of the same letter becomes the same event (the log keeps one); the
    rest of the payload is kept byte for byte.
    """
    existing = entry.event_id
    if existing is not None:
        return entry.payload, existing
    digest = hashlib.blake2b(entry.payload, digest_size=8).hexdigest()
    event_id = f"requeued:{entry.origin}:{digest}"
    body = entry.payload.lstrip()
    assert body.startswith(b"{"), "only JSON objects have a readable event_type"
    rest = body[1:].lstrip()
    separator = b"" if rest.startswith(b"}") else b","
    return b'{"event_id":' + _ENCODE_ID(event_id) + separator + rest, event_id


async def count_before(redis: Redis, before: datetime, reason: str | None = None) -> int:
    """Count dead letters written before ``before`` whose reason matches."""
    count = 0
    async for entry in iter_dead_letters(redis, "-", _end_before(before)):
        count += reason_matches(entry.reason, reason)
    return count


async def purge(redis: Redis, before: datetime, reason: str | None = None) -> int:
    """Delete dead letters written before ``before`` (matching ``reason``); return how many."""
    script = redis.register_script(_PURGE)
    deleted = 0
    pending: list[str] = []

    async def flush() -> None:
        nonlocal deleted
        if pending:
            deleted += int(await script(keys=[DLQ_STREAM, DLQ_INDEX], args=pending))
            pending.clear()

    async for entry in iter_dead_letters(redis, "-", _end_before(before)):
        if reason_matches(entry.reason, reason):
            pending.extend((entry.entry_id, entry.event_id or ""))
            if len(pending) >= 2 * PAGE:
                await flush()
    await flush()
    return deleted


# --- helpers -----------------------------------------------------------------


async def _read_one(redis: Redis, entry_id: str) -> DeadLetterEntry | None:
    raw = raw_client(redis)
    try:
        reply = await raw.execute_command("XRANGE", DLQ_STREAM, entry_id, entry_id)
    except ResponseError as exc:
        if "Invalid stream ID" in str(exc):  # not an entry id at all: not in the DLQ
            return None
        raise
    return parse_entry(reply[0][0], reply[0][1]) if reply else None


def _why_not_requeued(payload: bytes) -> str:
    try:
        decoded = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "payload is not JSON: its event type cannot be read"
    if not isinstance(decoded, dict):
        return "payload is not one event object (a broken envelope?): no event type to route by"
    found = decoded.get("event_type")
    if found is None:
        return "payload has no event_type"
    return f"payload's event_type {found!r} is not one of {', '.join(EVENT_TYPES)}"


def _end_before(before: datetime) -> str:
    end_ms = datetime_to_ms(before) - 1
    return str(end_ms) if end_ms >= 0 else "0-0"
