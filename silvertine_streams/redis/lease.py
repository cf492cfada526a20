"""A lease: a Redis key one holder owns at a time, renewed while it works.

The ingress mirrors (``lease:events:<type>``), the single-process
:class:`~silvertine_streams.agents.processor.EventProcessor` (the same keys:
it reads the same ingress group, so it must never run beside a mirror), the
handler group (``lease:handlers:<app id>``) and retention (``lease:retention``)
each hold one. A holder that dies simply stops renewing: the key expires after
``ttl_ms`` and the next contender takes it.
"""

from __future__ import annotations

from redis.asyncio import Redis

__all__ = ["Lease"]

_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """Take, renew and give back one lease key.

    Args:
        redis: the client.
        key: the lease key.
        holder: who holds it when this process does (a consumer name).
        ttl_ms: how long it lasts without renewal.
    """

    __slots__ = ("key", "holder", "ttl_ms", "_hold", "_release")

    def __init__(self, redis: Redis, key: str, holder: str, ttl_ms: int) -> None:
        self.key = key
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def hold(self) -> bool:
        """Take the lease, or renew it if ours; return whether this holder has it now."""
        return bool(await self._hold(keys=[self.key], args=[self.holder, self.ttl_ms]))

    async def release(self) -> bool:
        """Delete the lease if this holder still has it; return whether it did."""
        return bool(await self._release(keys=[self.key], args=[self.holder]))
