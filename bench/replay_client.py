"""Read ``log:market_data`` once, one way, and print what it took (the replay scenario's child).

    python -m bench.replay_client replay|pages|decode|xrange

* ``replay``: ``silvertine_streams.replay.replay(redis, ["market_data"],
  speed="max", to=<no-op sink>)``, the product's API.
* ``pages``: ``read_pages`` alone (XRANGE pages decoded with msgspec, no delivery).
* ``decode``: XRANGE paging + one msgspec decode per page, written here (the
  brief's stand-in when ``silvertine_streams.replay`` is not there).
* ``xrange``: raw ``XRANGE … COUNT 5000`` paging, replies left undecoded (the floor).

Env: ``BENCH_REDIS_URL``; ``BENCH_START_DELAY_S`` (let a profiler attach first).
Prints one JSON line: ``{"events", "seconds", "cpu_s", "hiredis"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from redis.asyncio import Redis

STREAM = "log:market_data"
PAGE_SIZE = 5000


async def _replay(redis: Redis) -> int:
    from silvertine_streams.replay import replay

    count = 0

    def sink(event: Any) -> None:
        nonlocal count
        count += 1

    summary = await replay(redis, ["market_data"], speed="max", to=sink)
    assert summary.replayed == count
    return count


async def _pages(redis: Redis) -> int:
    from silvertine_streams.replay import read_pages

    count = 0
    async for page in read_pages(redis, "market_data"):
        count += len(page.events)
    return count


async def _xrange(redis: Redis, decode: bool = False) -> int:
    import msgspec

    from bench.load import raw_client
    from silvertine_streams.events import EventUnion

    page_decoder = msgspec.json.Decoder(list[EventUnion])
    raw = raw_client(redis)
    cursor, count = "-", 0
    while True:
        reply = await raw.execute_command("XRANGE", STREAM, cursor, "+", "COUNT", PAGE_SIZE)
        if decode:  # the `event` field comes first in the sink's entries
            count += len(page_decoder.decode(b"[" + b",".join(f[1] for _, f in reply) + b"]"))
        else:
            count += len(reply)
        if len(reply) < PAGE_SIZE:
            return count
        ms, _, seq = reply[-1][0].decode().partition("-")
        cursor = f"{ms}-{int(seq) + 1}"


async def _decode(redis: Redis) -> int:
    return await _xrange(redis, decode=True)


async def main(variant: str) -> None:
    delay = float(os.environ.get("BENCH_START_DELAY_S", "0"))
    if delay:
        await asyncio.sleep(delay)
    redis = Redis.from_url(os.environ["BENCH_REDIS_URL"])
    read = {"replay": _replay, "pages": _pages, "decode": _decode, "xrange": _xrange}[variant]
    try:
        await redis.ping()
        cpu0, started = time.process_time(), time.perf_counter()
        events = await read(redis)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    finally:
        await redis.aclose()
    try:
        import hiredis  # noqa: F401

        parser = True
    except ImportError:
        parser = False
    print(json.dumps({"events": events, "seconds": seconds, "cpu_s": cpu, "hiredis": parser}),
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
