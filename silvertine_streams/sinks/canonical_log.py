"""The idempotent canonical-log sink: every accepted event lands once in ``log:<type>``.

One ``EVALSHA`` per batch checks each event id against a dedupe index and
appends only the new ones, atomically (``canonical_log.lua``). Because the
check and the append are one atomic step in Redis, a batch redelivered after a
worker's ``kill -9`` writes nothing twice, even if the worker lost its own
dedupe state: the sink does not rely on any Faust table having been committed.

The dedupe index is a hash per time bucket, ``ids:<type>:<b>`` with
``b = floor(now_s / window_s)``, mapping ``event_id -> "<fingerprint>|<entry id>"``
(the log entry the id was written to, so ``silvertine audit`` finds it with
one HGET and one XRANGE; see :func:`split_index_value`). A write
consults the current and the previous bucket and records new ids in the
current one, which expires ``2 * window_s`` after its last write. Guarantee: a
duplicate is caught for at least ``window_s`` after the first write of its id
(less the clock skew between writers, whose clocks pick the bucket), and for at
most about ``3 * window_s``. Memory holds at most three buckets per type.

Speed (DESIGN §5): redis-py packs every command argument in pure Python, so the
whole batch travels as *one* msgpack argument, and the script answers with one
status character per event.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from functools import cache, partial
from importlib import resources
from typing import NamedTuple

import msgspec
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from silvertine_streams.errors import SilvertineError
from silvertine_streams.sinks.keys import dedupe_bucket, log_stream
from silvertine_streams.sinks.replication import ReplicaWait
from silvertine_streams.sinks.retry import Backoff, count_retry, retry_transient

log = logging.getLogger(__name__)

# Bounds one script run (~3.7 µs of Redis time per event, ~20 ms) so a huge batch
# cannot stall Redis; each chunk is idempotent on its own, so splitting is safe.
MAX_EVENTS_PER_CALL = 5000

BULK_EVENTS_PER_CALL = 500
"""The bound for lower lanes' sinks (market data, signals): ~2 ms of Redis time per
call, so a critical order's write that arrives meanwhile waits behind at most one
chunk, not a whole 5,000-event batch (the priority bench measured 27 ms order
writes under a flood against 3 ms without one). A few more script calls per batch
cost ~0.1 µs per event."""


class WriteStatus(enum.IntEnum):
    """What the canonical log did with one record."""

    WRITTEN = 0
    """New id: appended to the log."""
    DUPLICATE = 1
    """Same id and fingerprint already logged: nothing written (redelivery, retry)."""
    CONFLICT = 2
    """Same id already logged with another fingerprint: the first write stays; the
    caller sends this one to the DLQ as ``id_conflict``."""
    BUSINESS_DUPLICATE = 3
    """A new id whose business key (a fill's venue and trade id) was already logged
    under another id: a producer that rebuilt the event on retry. Not logged; the
    caller sends it to the DLQ as ``duplicate_trade``."""


_STATUS_OF_CHAR = {
    "W": WriteStatus.WRITTEN,
    "D": WriteStatus.DUPLICATE,
    "C": WriteStatus.CONFLICT,
    "B": WriteStatus.BUSINESS_DUPLICATE,
}


class LogRecord(NamedTuple):
    """One accepted event, ready for the canonical log.

    Attributes:
        event_id: the event's id, the dedupe key.
        fingerprint: a digest of the event's content; tells a redelivery
            (same fingerprint) from an id collision (different fingerprint).
        event_json: the event JSON (UTF-8), stored as the entry field ``event``.
        origin: where it came from, e.g. ``"silvertine.order/2/1234"``
            (topic/partition/offset); stored as the field ``origin`` for audit.
        business_key: what identifies the event in its domain whatever its id
            (:func:`~silvertine_streams.domain.business_keys.business_key`), or "".
    """

    event_id: str
    fingerprint: str
    event_json: bytes
    origin: str
    business_key: str = ""


def split_index_value(value: bytes | str) -> tuple[str, str | None]:
    """Split a dedupe index value into ``(fingerprint, log entry id)``.

    Values written before entry ids were recorded hold the fingerprint alone:
    their entry id is None.
    """
    text = value.decode() if isinstance(value, bytes) else value
    fingerprint, bar, entry_id = text.partition("|")
    return fingerprint, (entry_id if bar else None)


@cache
def _script() -> tuple[str, str]:
    """Return the Lua source and its SHA1, read once from the package data."""
    lua = resources.files("silvertine_streams.sinks").joinpath("canonical_log.lua")
    source = lua.read_text("utf-8")
    return source, hashlib.sha1(source.encode("utf-8")).hexdigest()


class CanonicalLogSink:
    """Append batches of events to ``log:<event_type>``, each event id once.

    ``write()`` never raises on a Redis outage: it retries with capped
    exponential backoff until Redis takes the batch, which blocks the caller
    (backpressure). Only :meth:`close` (raising
    :class:`~silvertine_streams.sinks.retry.SinkClosed`) or a non-transient
    error (a script bug, ``WRONGTYPE``, bad credentials) ends a write early.

    Attributes:
        event_type: the event type whose log this sink writes.
        stream: the log stream key.
        retries: failed attempts so far (all writes), for metrics.
        last_error: the most recent transient error, or ``None``.
        written: records appended so far.
        duplicates: records found already logged so far.
        conflicts: records refused for an id conflict so far.
    """

    def __init__(
        self,
        redis: Redis,
        event_type: str,
        window_s: float = 86400,
        retry_max_s: float = 2.0,
        *,
        clock: Callable[[], float] = time.time,
        replica_wait: ReplicaWait | None = None,
        max_per_call: int = MAX_EVENTS_PER_CALL,
    ) -> None:
        """Build the sink; no I/O happens until the first write.

        Args:
            redis: an asyncio client; give it socket timeouts so a hung server
                turns into a retry instead of a hang.
            event_type: e.g. ``"order"``.
            window_s: how long, at least, a duplicate id is caught.
            retry_max_s: the cap on the delay between attempts during an outage.
            clock: wall-clock seconds; picks the dedupe bucket (inject in tests).
            replica_wait: when set, a write counts as landed only once that many
                Redis replicas acknowledged it (``SILVERTINE_REDIS_WAIT_REPLICAS``);
                until then it is retried like an outage.
            max_per_call: records per script call at most (a batch is split).
        """
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if not 1 <= max_per_call <= MAX_EVENTS_PER_CALL:
            raise ValueError(f"max_per_call must be in 1..{MAX_EVENTS_PER_CALL}, "
                             f"got {max_per_call}")
        self.max_per_call = max_per_call
        self.event_type = event_type
        self.stream = log_stream(event_type)
        self.window_s = window_s
        self.retries = 0
        self.last_error: BaseException | None = None
        self.written = 0
        self.duplicates = 0
        self.conflicts = 0
        self.business_duplicates = 0
        self._redis = redis
        self._clock = clock
        self._bucket_ttl_ms = math.ceil(2 * window_s * 1000)
        self._backoff = Backoff(initial_s=min(0.05, retry_max_s), max_s=retry_max_s)
        self._closing = asyncio.Event()
        self._on_retry = partial(count_retry, self)
        self._encode = msgspec.msgpack.Encoder().encode
        self._replica_wait = replica_wait

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing.is_set()

    def close(self) -> None:
        """Refuse new writes and interrupt retrying ones with ``SinkClosed``.

        A write whose attempt already landed still returns normally. The redis
        client belongs to the caller and stays open.
        """
        self._closing.set()

    async def write(self, batch: Sequence[LogRecord]) -> list[WriteStatus]:
        """Append the new records of ``batch`` to the log, atomically and idempotently.

        Args:
            batch: records in log order; ids may repeat (the first one wins).

        Returns:
            One status per record, in order. After a retried attempt whose
            reply was lost, records it wrote come back as ``DUPLICATE``.

        Raises:
            SinkClosed: :meth:`close` was called before the batch landed.
            redis.exceptions.RedisError: a non-transient error (a bug to fix).
        """
        statuses: list[WriteStatus] = []
        per_call = self.max_per_call
        for start in range(0, len(batch), per_call):
            chunk = batch[start : start + per_call]
            landed: list[bytes | str] = []  # the script's reply while replicas are awaited
            reply = await retry_transient(
                partial(self._call, chunk, landed),
                self._backoff,
                on_retry=self._on_retry,
                closing=self._closing,
                name=self.stream,
            )
            statuses.extend(self._decode_reply(reply, len(chunk)))
        return statuses

    async def _call(self, chunk: Sequence[LogRecord], landed: list[bytes | str]) -> bytes | str:
        """Make one attempt: one EVALSHA carrying the whole chunk as one argument.

        With a replica wait, the script's reply is kept in ``landed`` when too few
        replicas acknowledged: the next attempt only waits again (a second run
        would answer ``DUPLICATE`` for what the first one wrote).
        """
        if landed:
            assert self._replica_wait is not None
            await self._replica_wait.run(self._redis, self.stream, None)
            return landed[0]
        flat: list[str] = []
        append = flat.append
        for event_id, fingerprint, event_json, origin, business_key in chunk:
            append(event_id)
            append(fingerprint)
            append(event_json.decode("utf-8"))  # msgpack str: Redis 6.2 cannot read bin
            append(origin)
            append(business_key)
        bucket = int(self._clock() // self.window_s)
        args = (
            self.stream,
            dedupe_bucket(self.event_type, bucket),
            dedupe_bucket(self.event_type, bucket - 1),
            self._encode(flat),
            self._bucket_ttl_ms,
        )
        source, sha = _script()
        if self._replica_wait is not None:
            return await self._call_replicated(source, sha, args, landed)
        try:
            reply: bytes | str = await self._redis.evalsha(sha, 3, *args)
            return reply
        except redis_errors.NoScriptError:
            # The script cache is empty after a Redis restart or SCRIPT FLUSH.
            # EVAL runs the batch and caches the script in one round trip, and
            # cannot meet NOSCRIPT again (as a SCRIPT LOAD then EVALSHA could).
            reply = await self._redis.eval(source, 3, *args)
            return reply

    async def _call_replicated(self, source: str, sha: str, args: tuple[str | bytes | int, ...],
                               landed: list[bytes | str]) -> bytes | str:
        """Run the script and ``WAIT`` for the replicas on one connection (:mod:`.replication`)."""
        assert self._replica_wait is not None
        wait = self._replica_wait
        try:
            reply: bytes | str = await wait.run(
                self._redis, self.stream, lambda pipe: pipe.evalsha(sha, 3, *args),
                on_write=landed.append)
        except redis_errors.NoScriptError:
            reply = await wait.run(self._redis, self.stream,
                                   lambda pipe: pipe.eval(source, 3, *args),
                                   on_write=landed.append)
        return reply

    def _decode_reply(self, reply: bytes | str, expected: int) -> list[WriteStatus]:
        text = reply.decode("ascii") if isinstance(reply, bytes) else reply
        if len(text) != expected:
            raise SilvertineError(  # a bug in the script or a foreign reply, not an outage
                f"{self.stream}: script answered {len(text)} statuses for {expected} records"
            )
        written = text.count("W")
        conflicts = text.count("C")
        business = text.count("B")
        self.written += written
        self.conflicts += conflicts
        self.business_duplicates += business
        self.duplicates += expected - written - conflicts - business
        return [_STATUS_OF_CHAR[c] for c in text]
