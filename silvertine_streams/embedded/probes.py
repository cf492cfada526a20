"""Readiness probes: a server counts as started once it answers a real request.

A TCP connect is not enough: Tansu accepts connections before it serves
metadata, and Redis answers ``LOADING`` while it replays its AOF.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from silvertine_streams.embedded.processes import LOOPBACK
from silvertine_streams.embedded.servers import KAFKA, REDIS
from silvertine_streams.errors import EmbeddedServerError


def readiness_probe(name: str, port: int) -> Callable[[], None]:
    """Build the probe of server ``name`` (``"kafka"`` or ``"redis"``) on ``port``."""
    return kafka_probe(port) if name == KAFKA else redis_probe(port)


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    ``asyncio.run`` refuses to nest; a fault test calling ``start_server`` from an
    async test would hit that, so the coroutine always gets its own thread and loop.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="silvertine-probe") as pool:
        pool.submit(asyncio.run, factory()).result()


def kafka_probe(port: int) -> Callable[[], None]:
    """Build a readiness probe: an aiokafka metadata round trip, not just a TCP connect."""

    async def metadata_round_trip() -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=f"{LOOPBACK}:{port}", request_timeout_ms=2_000
        )
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    def probe() -> None:
        # A plain connect first: while the port is closed aiokafka would log an
        # error per attempt, which reads like a failure on a normal start-up.
        socket.create_connection((LOOPBACK, port), timeout=1.0).close()
        _run_coroutine(metadata_round_trip)

    return probe


def redis_probe(port: int) -> Callable[[], None]:
    """Build a readiness probe: PING answers (not LOADING) and AOF is on."""

    def probe() -> None:
        import redis

        client = redis.Redis(
            host=LOOPBACK, port=port, socket_connect_timeout=1.0, socket_timeout=2.0
        )
        try:
            client.ping()
            appendonly = client.config_get("appendonly").get("appendonly")
        finally:
            client.close()
        if appendonly != "yes":
            # Not a "not yet" but fatal: the canonical log would not survive a restart.
            raise EmbeddedServerError(
                REDIS, f"runs without AOF (CONFIG GET appendonly = {appendonly!r}, need 'yes')"
            )

    return probe
