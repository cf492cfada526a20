"""Measure the canonical log's dedupe index: Redis bytes per logged event.

Starts a throwaway redis-server (no persistence) on a free loopback port, logs
``--events`` market-data events through :class:`CanonicalLogSink` in batches of
500 (all in one dedupe bucket: the clock is pinned), and prints ``MEMORY USAGE``
of the bucket (``SAMPLES 0``: every field counted) divided by the events. A
second run logs fills with a business key (venue, trade id), which costs a
second index field per event.

    python -m bench.dedupe_memory [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import socket
import subprocess
import time
import uuid

from redis.asyncio import Redis

from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord
from silvertine_streams.sinks.keys import dedupe_bucket

BATCH = 500


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _measure(port: int, events: int, business_key: bool) -> tuple[int, int]:
    redis = Redis(port=port)
    await redis.flushall()
    sink = CanonicalLogSink(redis, "fill" if business_key else "market_data",
                            clock=lambda: 1_000.0)
    for start in range(0, events, BATCH):
        batch = []
        for _ in range(min(BATCH, events - start)):
            event_id = str(uuid.uuid4())
            body = b'{"event_id":"%s","event_type":"market_data","symbol":"AAPL","price":1.0}' % (
                event_id.encode())
            key = f"binance|{uuid.uuid4().hex[:12]}" if business_key else ""
            batch.append(LogRecord(event_id, hashlib.blake2b(body, digest_size=8).hexdigest(),
                                   body, f"silvertine.market_data/0/{start}", key))
        await sink.write(batch)
    bucket = dedupe_bucket(sink.event_type, int(1_000.0 // sink.window_s))
    size = int(await redis.memory_usage(bucket, samples=0) or 0)
    fields = int(await redis.hlen(bucket))
    await redis.aclose()
    return size, fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    events = parser.parse_args().events
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not on PATH")
    port = _free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        print(version.strip())
        for business_key in (False, True):
            size, fields = asyncio.run(_measure(port, events, business_key))
            label = "fills with a business key" if business_key else "events without one"
            print(f"{events} {label}: {size} bytes, {fields} fields, "
                  f"{size / events:.1f} bytes/event, {size / fields:.1f} bytes/field")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
