"""A handler group's durable position on the canonical logs, kept in Redis.

The position is a Redis consumer group ``handlers:<app id>`` on each
``log:<type>``: an entry is *delivered* to the group when it is read
(``XREADGROUP``) and stays in the group's pending list until it is
*acknowledged* (``XACK``), which the group does only after every handler ran
with it. So whatever a crash interrupts is still pending, and the next holder
claims it (``XAUTOCLAIM``) and runs it again: at least once.

One worker at a time holds the group (a lease, ``lease:handlers:<app id>``,
like the ingress mirror's), which keeps each symbol's events in log order for
handlers. Every write made under the lease — an acknowledgement, an
idempotent handler's record — is *fenced*: the script checks that the lease
still names this worker, so a worker that stalled past its lease cannot
acknowledge what its successor is redoing.

Idempotent handlers' records live in ``handlers:<app id>:done:<type>`` only
until their entry is acknowledged (in the same script): an acknowledged entry
is never delivered again, so the hash holds at most one batch per type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from silvertine_streams.errors import LeaseLost
from silvertine_streams.handlers.effects import RedisArg
from silvertine_streams.replay.reader import raw_client
from silvertine_streams.sinks.retry import Backoff, retry_transient
from silvertine_streams.topics import (
    handler_completions,
    handler_group,
    handler_lease,
    handler_progress,
    log_stream,
)

__all__ = ["GroupCompletions", "GroupPosition", "RawEntry"]

RawEntry = list[Any]
"""One log entry as Redis sends it: ``[id, [field, value, ...]]`` (bytes)."""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease, log stream, completions hash, progress hash.
# ARGV: holder, group, event type, lease ms, then one msgpack argument: the
# entry ids, then one more: the completion fields to clear (both string arrays).
_ACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ids = cmsgpack.unpack(ARGV[5])
local fields = cmsgpack.unpack(ARGV[6])
local acked = 0
for s = 1, #ids, 1000 do
  acked = acked + redis.call('XACK', KEYS[2], ARGV[2], unpack(ids, s, math.min(s + 999, #ids)))
end
if acked > 0 then redis.call('HINCRBY', KEYS[4], ARGV[3], acked) end
for s = 1, #fields, 1000 do
  redis.call('HDEL', KEYS[3], unpack(fields, s, math.min(s + 999, #fields)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return acked
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


def _identity(response: Any, **options: Any) -> Any:
    return response


class GroupPosition:
    """The Redis side of one app's handler group: lease, reads, acknowledgements.

    Args:
        redis: an asyncio client (bytes replies); its pool is shared.
        app_id: the app whose handler group this is.
        holder: this worker's name in the consumer groups and in the lease.
        lease_ms: how long a silent holder keeps the group.
        retry_max_s: the cap on the delay between retries of a fenced write.
    """

    def __init__(self, redis: Redis, app_id: str, holder: str, lease_ms: int = 5000,
                 retry_max_s: float = 2.0) -> None:
        self.app_id = app_id
        self.group = handler_group(app_id)
        self.lease = handler_lease(app_id)
        self.progress = handler_progress(app_id)
        self.holder = holder
        self.lease_ms = lease_ms
        self._redis = redis
        # XREADGROUP and XAUTOCLAIM replies stay raw: the entries go to the
        # log page decoder as they are (redis-py would build dicts first).
        self._raw = raw_client(redis)
        self._raw.set_response_callback("XREADGROUP", _identity)
        self._raw.set_response_callback("XAUTOCLAIM", _identity)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._ack = redis.register_script(_ACK)
        self._complete = redis.register_script(_COMPLETE)
        self._backoff = Backoff(initial_s=min(0.05, retry_max_s), max_s=retry_max_s)
        self._encode = msgspec.msgpack.Encoder().encode

    # --- the lease ------------------------------------------------------------

    async def hold(self) -> bool:
        """Take or renew the lease; return whether this worker holds it now."""
        return bool(await self._renew(keys=[self.lease], args=[self.holder, self.lease_ms]))

    async def release(self) -> None:
        """Give the lease up (if still ours), so a successor need not wait it out."""
        await self._release(keys=[self.lease], args=[self.holder])

    # --- reading ----------------------------------------------------------------

    async def ensure(self, event_type: str) -> None:
        """Create the group on ``log:<type>`` if missing, from the log's first entry."""
        try:
            await self._redis.xgroup_create(log_stream(event_type), self.group, id="0",
                                            mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self, event_type: str, cursor: str, count: int
                    ) -> tuple[str, list[RawEntry]]:
        """Take over pending entries (delivered, never acknowledged) from ``cursor`` on.

        Returns:
            The next cursor (``"0-0"`` once the pending list is through) and the
            entries, in log order. Entries deleted from the log meanwhile are
            left out.
        """
        reply: list[Any] = await self._raw.execute_command(
            "XAUTOCLAIM", log_stream(event_type), self.group, self.holder, 0, cursor,
            "COUNT", count)
        following = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        entries = [entry for entry in reply[1] if entry and entry[1] is not None]
        return following, entries

    async def read(self, event_type: str, count: int, block_ms: int) -> list[RawEntry]:
        """Return up to ``count`` entries never delivered to the group (waits ``block_ms``)."""
        reply: Any = await self._raw.execute_command(
            "XREADGROUP", "GROUP", self.group, self.holder, "COUNT", count, "BLOCK", block_ms,
            "STREAMS", log_stream(event_type), ">")
        if not reply:
            return []
        # RESP2: [[stream, entries]]; RESP3: {stream: entries}.
        entries: list[RawEntry] = (next(iter(reply.values())) if isinstance(reply, dict)
                                   else reply[0][1])
        return entries

    # --- acknowledging ------------------------------------------------------------

    async def acknowledge(self, event_type: str, entry_ids: Sequence[bytes | str],
                          cleared: Sequence[str] = ()) -> int:
        """Acknowledge ``entry_ids`` and drop their completion records, fenced by the lease.

        Retries a Redis outage until it lands (the group holds still meanwhile).

        Returns:
            How many entries were pending (0 for ones already acknowledged).

        Raises:
            LeaseLost: another worker holds the lease; nothing was acknowledged.
        """
        ids = [i.decode() if isinstance(i, bytes) else i for i in entry_ids]
        args = (self.holder, self.group, event_type, self.lease_ms, self._encode(ids),
                self._encode(list(cleared)))
        keys = [self.lease, log_stream(event_type), handler_completions(self.app_id, event_type),
                self.progress]
        acked = int(await retry_transient(partial(self._ack, keys=keys, args=args),
                                          self._backoff, name=self.group))
        if acked < 0:
            raise LeaseLost(self.lease, self.holder)
        return acked

    async def lag(self, event_type: str) -> int:
        """Return the log entries of ``event_type`` the group has not finished yet."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(log_stream(event_type))
        pipe.hget(self.progress, event_type)
        length, done = await pipe.execute()
        return max(0, int(length) - int(done or 0))

    def completions(self, event_type: str) -> GroupCompletions:
        """Return a fresh record of idempotent handlers' completions for one batch."""
        return GroupCompletions(self, event_type)

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

    async def _recorded(self, event_type: str, fields: list[str]) -> set[str]:
        if not fields:
            return set()
        values = await self._redis.hmget(handler_completions(self.app_id, event_type), fields)
        return {field for field, value in zip(fields, values, strict=True) if value is not None}


def completion_field(handler_name: str, event_id: str) -> str:
    """Return the completions-hash field of one handler and one event."""
    return f"{handler_name}|{event_id}"


class GroupCompletions:
    """Which idempotent handler completed which event of one batch (see :mod:`.effects`).

    :meth:`load` reads what earlier holders recorded (only a reclaimed batch can
    have any); :meth:`complete` records a call with its staged writes.
    """

    def __init__(self, position: GroupPosition, event_type: str) -> None:
        self._position = position
        self._event_type = event_type
        self._done: set[str] = set()

    async def load(self, handler_names: Iterable[str], event_ids: Iterable[str]) -> int:
        """Read the records of ``handler_names`` × ``event_ids``; return how many exist."""
        fields = [completion_field(name, event_id)
                  for event_id in event_ids for name in handler_names]
        self._done = await self._position._recorded(self._event_type, fields)
        return len(self._done)

    def completed(self, handler_name: str, event_id: str) -> bool:
        """Return whether ``handler_name`` completed ``event_id`` before."""
        return bool(self._done) and completion_field(handler_name, event_id) in self._done

    async def complete(self, handler_name: str, event_id: str,
                       commands: list[tuple[RedisArg, ...]]) -> int:
        """Record the call and run ``commands``, in one fenced script; return how many failed.

        Raises:
            LeaseLost: another worker holds the lease; nothing was recorded or run.
        """
        field = completion_field(handler_name, event_id)
        refused = await self._position._record(self._event_type, field, commands)
        self._done.add(field)
        return refused
