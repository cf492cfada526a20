"""The one lease every single-holder task uses (mirrors, processor, handler group, retention)."""

from __future__ import annotations

from redis.asyncio import Redis

from silvertine_streams.redis.lease import Lease
from tests.helpers import async_wait_for


async def test_one_holder_at_a_time_renewal_release_and_expiry(redis_client: Redis) -> None:
    first = Lease(redis_client, "lease:test", "a", ttl_ms=60_000)
    second = Lease(redis_client, "lease:test", "b", ttl_ms=200)
    assert await first.hold()
    assert await first.hold()  # renewing one's own lease
    assert not await second.hold()
    assert not await second.release()  # not b's to give back
    assert await redis_client.get("lease:test") == b"a"
    assert await first.release()
    assert await second.hold()
    assert not await first.hold()

    # b stops renewing (it died): its lease expires and a takes it.
    async def taken() -> bool:
        return await first.hold()

    await async_wait_for(taken, timeout=5, interval=0.05, message="b's lease to expire")
    assert await redis_client.get("lease:test") == b"a"
