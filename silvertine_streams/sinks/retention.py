"""Retention: the canonical logs and the DLQ index bounded by policy, nothing trimmed unread.

One worker at a time (the lease ``lease:retention``) runs a round every
``SILVERTINE_RETENTION_INTERVAL_S``:

* **Logs.** For each type with a retention age (``SILVERTINE_LOG_RETENTION``)
  or length (``SILVERTINE_LOG_MAX_ENTRIES``) it asks for the MINID of those
  bounds, clamps it to the oldest entry any reader still needs
  (:func:`~silvertine_streams.domain.retention.plan_trim`) and runs
  ``XTRIM MINID``. Readers are every handler group following the log — each
  group adds its app id to ``handlers:followers:<type>`` when it starts
  following, so no ``SCAN`` is needed to find them — and any Redis consumer
  group on the log (its last delivered and oldest pending entry). The trim
  itself is a script that checks again, atomically, that no follower's cursor
  lies below the MINID (a cursor moved back by an operator, a group that just
  started) and moves the followers' finished-entry counts down by what it
  removed, so ``silvertine_handler_lag`` stays right.
* **DLQ index.** The ``dlq`` stream is bounded by its sink; this sweeps the
  ``dlq:ids`` references to entries the bound removed (ids below the stream's
  first entry), a page at a time.
* **Dedupe index.** Samples its size per type (``HLEN`` of the live buckets and,
  where the ACL allows, ``MEMORY USAGE``) into gauges. Its entries are *not*
  trimmed with the log: they keep their own window (``SILVERTINE_DEDUPE_WINDOW_S``),
  so a redelivery of a trimmed event is still refused.

Idempotent handlers' completion records need no retention: the handler group
drops them when its cursor passes their entry (:mod:`~silvertine_streams.handlers.positions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from silvertine_streams.domain.retention import (
    age_minid,
    higher,
    keep_after,
    parse_id,
    plan_trim,
)
from silvertine_streams.observability.metrics import (
    DEDUPE_INDEX_BYTES,
    DEDUPE_INDEX_ENTRIES,
    LOG_LENGTH,
    LOG_RETENTION_HELD,
    LOG_TRIMMED,
)
from silvertine_streams.redis.lease import Lease
from silvertine_streams.sinks.keys import DLQ_INDEX, DLQ_STREAM, dedupe_bucket
from silvertine_streams.topics import (
    RETENTION_LEASE,
    handler_cursor,
    handler_progress,
    log_followers,
    log_stream,
)

__all__ = ["Retention", "TrimResult"]

log = logging.getLogger(__name__)

TRIM_CHUNK = 10_000
"""Entries a length bound trims per script call (bounds the script's run time)."""
SWEEP_PAGE = 1000
"""``dlq:ids`` fields checked per script call."""
SWEEP_PAGES_PER_ROUND = 50

# The id of the n-th oldest entry (n = ARGV[1]); only the id leaves Redis.
_NTH_ID = """
local e = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
if #e == 0 then return false end
return e[#e][1]
"""

# KEYS: log, followers set, then each follower's cursor hash, then each one's
# progress hash. ARGV: type, minid, n followers, their app ids. Returns the
# entries removed, or -1 when a follower's position no longer allows the MINID
# (the caller plans again next round).
_TRIM = """
local function parse(id)
  local d = string.find(id, '-', 1, true)
  if d then return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1)) end
  return tonumber(id), 0
end
local n = tonumber(ARGV[3])
if redis.call('SCARD', KEYS[2]) ~= n then return -1 end
local mms, mseq = parse(ARGV[2])
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[2], ARGV[3 + i]) == 0 then return -1 end
  local cms, cseq = parse(redis.call('HGET', KEYS[2 + i], ARGV[1]) or '0-0')
  -- the follower finished its cursor: the MINID may be the entry after it, no higher
  if mms > cms or (mms == cms and mseq > cseq + 1) then return -1 end
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
if removed > 0 then
  for i = 1, n do redis.call('HINCRBY', KEYS[2 + n + i], ARGV[1], -removed) end
end
return removed
"""

# KEYS: dlq, dlq:ids. ARGV: fields of dlq:ids. Drops references to entries
# below the stream's first one (removed by its bound); returns fields deleted.
_SWEEP = """
local function parse(id)
  local d = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))
end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local fms, fseq = math.huge, 0
if #head > 0 then fms, fseq = parse(head[1][1]) end
local deleted = 0
for i = 1, #ARGV do
  local value = redis.call('HGET', KEYS[2], ARGV[i])
  if value then
    local keep, total = {}, 0
    for id in string.gmatch(value, '%S+') do
      total = total + 1
      local ms, seq = parse(id)
      if ms > fms or (ms == fms and seq >= fseq) then keep[#keep + 1] = id end
    end
    if #keep == 0 then
      redis.call('HDEL', KEYS[2], ARGV[i])
      deleted = deleted + 1
    elseif #keep < total then
      redis.call('HSET', KEYS[2], ARGV[i], table.concat(keep, ' '))
    end
  end
end
return deleted
"""


@dataclass(frozen=True, slots=True)
class TrimResult:
    """What one type's trim did.

    Attributes:
        removed: entries removed.
        minid: the MINID trimmed at (None: nothing asked or allowed).
        held_by: the reader that kept entries retention would have trimmed.
    """

    removed: int
    minid: str | None
    held_by: str | None


@dataclass(slots=True)
class _Sweep:
    cursor: int = 0
    head: str | None = None
    running: bool = False
    swept: int = field(default=0)


class Retention:
    """Trims the canonical logs and sweeps the DLQ index, while this worker holds the lease.

    Args:
        redis: an asyncio client.
        holder: this worker's name in the lease.
        max_age_s: per type, the age after which entries go.
        max_entries: per type, the length beyond which the oldest entries go.
        event_types: the types whose dedupe index is sampled.
        dedupe_window_s: the log sink's dedupe window (names the live buckets).
        interval_s: seconds between rounds.
        lease_ms: how long a silent holder keeps the lease.
        clock: wall-clock seconds (the dedupe buckets' clock).
    """

    def __init__(self, redis: Redis, holder: str, *, max_age_s: Mapping[str, float],
                 max_entries: Mapping[str, int], event_types: Iterable[str],
                 dedupe_window_s: float, interval_s: float = 10.0, lease_ms: int = 30_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.holder = holder
        self.max_age_s = dict(max_age_s)
        self.max_entries = dict(max_entries)
        self.event_types = tuple(event_types)
        self.interval_s = interval_s
        self.lease_ms = max(lease_ms, round(3 * interval_s * 1000))
        self._window_s = dedupe_window_s
        self._clock = clock
        self._redis = redis
        self._lease = Lease(redis, RETENTION_LEASE, holder, self.lease_ms)
        self._nth_id = redis.register_script(_NTH_ID)
        self._trim = redis.register_script(_TRIM)
        self._sweep_script = redis.register_script(_SWEEP)
        self._sweep = _Sweep()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run a round every interval while holding the lease, until :meth:`stop`."""
        while not self._stopping.is_set():
            try:
                if await self._lease.hold():
                    await self.round()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                log.warning("retention: waiting for Redis: %s", exc)
            except redis_errors.ResponseError as exc:
                log.error("retention round failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
        with contextlib.suppress(redis_errors.RedisError, OSError):
            await self._lease.release()

    def stop(self) -> None:
        """End :meth:`run` after the round in hand."""
        self._stopping.set()

    async def round(self) -> dict[str, TrimResult]:
        """Trim every bounded log, sweep the DLQ index a few pages, sample the gauges."""
        results: dict[str, TrimResult] = {}
        for event_type in sorted(set(self.max_age_s) | set(self.max_entries)):
            results[event_type] = await self.trim(event_type)
        await self.sweep_dlq_index()
        await self.sample()
        return results

    # --- logs -------------------------------------------------------------------

    async def trim(self, event_type: str, max_calls: int = 100) -> TrimResult:
        """Trim ``log:<type>`` to its bounds, never past a reader's position.

        A length bound far behind is trimmed :data:`TRIM_CHUNK` entries per call,
        at most ``max_calls`` calls per round.
        """
        removed, minid, held_by = 0, None, None
        for _ in range(max_calls):
            step, more = await self._trim_once(event_type)
            removed += step.removed
            minid = step.minid or minid
            held_by = step.held_by
            if not more or step.removed <= 0:
                break
        if removed:
            LOG_TRIMMED.labels(event_type).inc(removed)
        LOG_RETENTION_HELD.labels(event_type).set(1 if held_by else 0)
        if held_by:
            log.info("retention: %s keeps entries from %s on for %s", log_stream(event_type),
                     minid, held_by)
        return TrimResult(removed, minid, held_by)

    async def _trim_once(self, event_type: str) -> tuple[TrimResult, bool]:
        stream = log_stream(event_type)
        wanted: str | None = None
        more = False
        age = self.max_age_s.get(event_type)
        if age is not None:
            seconds, micros = await self._redis.time()
            wanted = age_minid(seconds * 1000 + micros // 1000, age)
        limit = self.max_entries.get(event_type)
        length = int(await self._redis.xlen(stream))
        LOG_LENGTH.labels(event_type).set(length)
        if limit is not None and length > limit:
            count = min(length - limit, TRIM_CHUNK)
            more = length - limit > count
            nth = await self._nth_id(keys=[stream], args=[count])
            if nth:
                wanted = higher(wanted, keep_after(_text(nth)))
        followers = sorted(_text(m) for m in await self._redis.smembers(log_followers(event_type)))
        readers = await self._readers(event_type, followers)
        plan = plan_trim(wanted, readers)
        if plan.minid is None:
            return TrimResult(0, None, plan.held_by), False
        keys = [stream, log_followers(event_type),
                *(handler_cursor(app) for app in followers),
                *(handler_progress(app) for app in followers)]
        removed = int(await self._trim(keys=keys,
                                       args=[event_type, plan.minid, len(followers), *followers]))
        if removed < 0:  # a follower moved back or joined meanwhile: plan again next round
            return TrimResult(0, None, plan.held_by), False
        return TrimResult(removed, plan.minid, plan.held_by), more and plan.held_by is None

    async def _readers(self, event_type: str, followers: list[str]) -> dict[str, str]:
        """The MINID each reader of ``log:<type>`` allows: handler groups, consumer groups."""
        readers: dict[str, str] = {}
        if followers:
            pipe = self._redis.pipeline(transaction=False)
            for app in followers:
                pipe.hget(handler_cursor(app), event_type)
            for app, cursor in zip(followers, await pipe.execute(), strict=True):
                readers[f"handler group {app}"] = keep_after(_text(cursor) if cursor else "0-0")
        stream = log_stream(event_type)
        try:
            groups = await self._redis.xinfo_groups(stream)
        except redis_errors.ResponseError:
            return readers  # no such key: nothing to trim either
        for group in groups:
            name = _text(group["name"])
            allowed = keep_after(_text(group["last-delivered-id"]))
            if int(group.get("pending", 0)):
                oldest = (await self._redis.xpending(stream, name))["min"]
                if oldest is not None and parse_id(_text(oldest)) < parse_id(allowed):
                    allowed = _text(oldest)
            readers[f"consumer group {name}"] = allowed
        return readers

    # --- the DLQ index -----------------------------------------------------------

    async def sweep_dlq_index(self, pages: int = SWEEP_PAGES_PER_ROUND) -> int:
        """Drop ``dlq:ids`` references to entries the DLQ bound removed; return fields deleted.

        A sweep starts when the stream's first entry changed since the last one
        started, and goes on for up to ``pages`` pages per call.
        """
        sweep = self._sweep
        if not sweep.running:
            head = await self._redis.xrange(DLQ_STREAM, count=1)
            first = _text(head[0][0]) if head else None
            if first == sweep.head:
                return 0
            sweep.head, sweep.cursor, sweep.running = first, 0, True
        deleted = 0
        for _ in range(pages):
            cursor, fields = await self._redis.hscan(DLQ_INDEX, sweep.cursor, count=SWEEP_PAGE)
            if fields:
                deleted += int(await self._sweep_script(keys=[DLQ_STREAM, DLQ_INDEX],
                                                        args=list(fields)))
            sweep.cursor = int(cursor)
            if sweep.cursor == 0:
                sweep.running = False
                break
        sweep.swept += deleted
        return deleted

    # --- the dedupe index ----------------------------------------------------------

    async def sample(self) -> None:
        """Set the dedupe index gauges: entries (HLEN) and bytes (MEMORY USAGE) per type."""
        bucket = int(self._clock() // self._window_s)
        pipe = self._redis.pipeline(transaction=False)
        keys = {t: [dedupe_bucket(t, b) for b in (bucket, bucket - 1, bucket - 2)]
                for t in self.event_types}
        for event_type in self.event_types:
            for key in keys[event_type]:
                pipe.hlen(key)
        counts = await pipe.execute()
        for i, event_type in enumerate(self.event_types):
            DEDUPE_INDEX_ENTRIES.labels(event_type).set(sum(counts[3 * i: 3 * i + 3]))
        try:
            pipe = self._redis.pipeline(transaction=False)
            for event_type in self.event_types:
                for key in keys[event_type]:
                    pipe.memory_usage(key)
            sizes = await pipe.execute()
        except redis_errors.ResponseError:
            return  # MEMORY not allowed to this user: entries only
        for i, event_type in enumerate(self.event_types):
            DEDUPE_INDEX_BYTES.labels(event_type).set(
                sum(int(s or 0) for s in sizes[3 * i: 3 * i + 3]))


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
