"""The dead-letter sink: rejected payloads go to the Redis stream ``dlq`` with a reason.

Each letter becomes one entry with the fields ``payload`` (the bytes as
received), ``reason`` (for a person) and ``origin`` (where it was read). A
batch goes in one Lua script call, so it lands whole or not at all.

For ``silvertine audit``, the same call records which entries hold each event
id: the hash ``dlq:ids`` maps ``event_id`` (read from the payload when it is a
JSON object with a string ``event_id``) to its dead-letter entry ids,
space-separated, oldest first. ``silvertine dlq requeue`` and ``purge`` keep it
in step when they delete entries.

The stream is bounded (``SILVERTINE_DLQ_MAX_LEN``): each ``XADD`` trims the oldest
entries (approximately, whole nodes at a time), and the script returns how many
went, counted in ``silvertine_dlq_trimmed_total`` and :attr:`DeadLetterSink.trimmed`.
Their Kafka copies stay in ``silvertine.dlq``. The ``dlq:ids`` references to
trimmed entries are swept by the retention task
(:mod:`silvertine_streams.sinks.retention`).

Delivery is at least once: like the canonical-log sink, ``write()`` retries a
Redis outage until it succeeds (an invalid event must not be lost either), and
a retry after a reply was lost in the outage can store a batch twice. Dead
letters carry no id to dedupe on; readers of ``dlq`` tolerate repeats. The
Kafka ``silvertine.dlq`` copy is produced by the agent glue, not here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import msgspec
from redis.asyncio import Redis

from silvertine_streams.observability.metrics import DLQ_TRIMMED
from silvertine_streams.sinks.keys import DLQ_INDEX, DLQ_STREAM
from silvertine_streams.sinks.replication import ReplicaWait
from silvertine_streams.sinks.retry import Backoff, count_retry, retry_transient

# ARGV: the stream's bound (0 = none), then payload, reason, origin, event_id
# ('' = none), ... (4 per letter). Plain arguments rather than one msgpack blob:
# payloads may be any bytes, and dead letters are rare enough that redis-py's
# per-argument cost does not matter. Returns how many old entries the bound
# removed: XADD MAXLEN does not say, the length before and after does (the
# script is atomic, so nothing else changed the stream meanwhile).
_WRITE_LETTERS = """
local bound = tonumber(ARGV[1])
local before = redis.call('XLEN', KEYS[1])
local added = 0
for i = 2, #ARGV, 4 do
  local entry
  if bound > 0 then
    entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', bound, '*',
      'payload', ARGV[i], 'reason', ARGV[i + 1], 'origin', ARGV[i + 2])
  else
    entry = redis.call('XADD', KEYS[1], '*',
      'payload', ARGV[i], 'reason', ARGV[i + 1], 'origin', ARGV[i + 2])
  end
  added = added + 1
  local event_id = ARGV[i + 3]
  if event_id ~= '' then
    local known = redis.call('HGET', KEYS[2], event_id)
    if known then entry = known .. ' ' .. entry end
    redis.call('HSET', KEYS[2], event_id, entry)
  end
end
return before + added - redis.call('XLEN', KEYS[1])
"""


class _EventIdOnly(msgspec.Struct):
    event_id: str | None = None


_ID_DECODER = msgspec.json.Decoder(_EventIdOnly)
log = logging.getLogger(__name__)


def payload_event_id(payload: bytes) -> str | None:
    """Return the ``event_id`` of a payload that is a JSON object holding one, else None."""
    try:
        found = _ID_DECODER.decode(payload).event_id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # A dead letter may be anything, JSON nested too deeply for msgspec included:
        # it has no id we can read, and writing it must not fail.
        return None
    return found or None


class DeadLetter(NamedTuple):
    """One rejected payload.

    Attributes:
        payload: the bytes as received (not re-encoded: they may not decode).
        reason: why it was rejected, for a person (e.g. ``"price must be positive"``).
        origin: where it was read, e.g. ``"silvertine.order/2/1234"``.
    """

    payload: bytes
    reason: str
    origin: str


class DeadLetterSink:
    """Append dead letters to the Redis stream ``dlq``, retrying through outages.

    Attributes:
        stream: the dead-letter stream key.
        retries: failed attempts so far (all writes), for metrics.
        last_error: the most recent transient error, or ``None``.
        written: letters stored so far.
    """

    def __init__(self, redis: Redis, retry_max_s: float = 2.0, *, max_len: int = 0,
                 replica_wait: ReplicaWait | None = None) -> None:
        """Build the sink; no I/O happens until the first write.

        Args:
            redis: an asyncio client; give it socket timeouts so a hung server
                turns into a retry instead of a hang.
            retry_max_s: the cap on the delay between attempts during an outage.
            max_len: entries the stream keeps, about (0 = no bound).
            replica_wait: when set, a write counts as landed only once that many
                Redis replicas acknowledged it.
        """
        self.stream = DLQ_STREAM
        self.retries = 0
        self.last_error: BaseException | None = None
        self.written = 0
        self.trimmed = 0
        self._max_len = max_len
        self._replica_wait = replica_wait
        self._redis = redis
        self._backoff = Backoff(initial_s=min(0.05, retry_max_s), max_s=retry_max_s)
        self._closing = asyncio.Event()
        self._on_retry = partial(count_retry, self)
        # redis-py's Script reloads the script itself after NOSCRIPT (a Redis restart).
        self._script = redis.register_script(_WRITE_LETTERS)

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closing.is_set()

    def close(self) -> None:
        """Refuse new writes and interrupt retrying ones with ``SinkClosed``."""
        self._closing.set()

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        """Store ``letters`` in ``dlq``, in order, in one transaction.

        Raises:
            SinkClosed: :meth:`close` was called before the letters landed.
            redis.exceptions.RedisError: a non-transient error (a bug to fix).
        """
        if not letters:
            return
        landed: list[int] = []
        trimmed = await retry_transient(
            partial(self._call, letters, landed),
            self._backoff,
            on_retry=self._on_retry,
            closing=self._closing,
            name=self.stream,
        )
        self.written += len(letters)
        if trimmed:
            self.trimmed += trimmed
            DLQ_TRIMMED.inc(trimmed)
            log.warning("%s: its bound (%d entries) removed the %d oldest dead letters "
                        "(their Kafka copies stay in the DLQ topic)", self.stream,
                        self._max_len, trimmed)

    async def _call(self, letters: Sequence[DeadLetter], landed: list[int]) -> int:
        """Make one attempt: every XADD and index update in one atomic script call.

        Returns:
            How many old entries the stream's bound removed.
        """
        wait = self._replica_wait
        if landed:  # written, waiting for replicas (see canonical_log.py)
            assert wait is not None
            await wait.run(self._redis, self.stream, None)
            return landed[0]
        args: list[bytes | str | int] = [self._max_len]
        for payload, reason, origin in letters:
            args.extend((payload, reason, origin, payload_event_id(payload) or ""))
        keys = [self.stream, DLQ_INDEX]
        if wait is None:
            return int(await self._script(keys=keys, args=args))
        # A Script queued on a pipeline is loaded first if Redis lacks it (after a restart).
        reply = await wait.run(self._redis, self.stream,
                               lambda pipe: self._script(keys=keys, args=args, client=pipe),
                               on_write=lambda r: landed.append(int(r)))
        return int(reply)
