"""Readiness probes: a server counts as started once it answers a real request.

A TCP connect is not enough: Tansu accepts connections before it serves
metadata, and Redis answers ``LOADING`` while it replays its AOF. The probes
talk through the same client factories as everything else
(``kafka/clients.py``, ``redis/clients.py``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from silvertine_streams.embedded.servers import KAFKA, REDIS
from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.settings import Settings

T = TypeVar("T")


def readiness_probe(name: str, url: str, settings: Settings) -> Callable[[], None]:
    """Build the probe of server ``name`` (``"kafka"`` or ``"redis"``) listening at ``url``.

    Args:
        name: which server.
        url: its client URL (``kafka://…`` or ``redis://…``).
        settings: the stack's settings; the server's URL field is replaced by ``url``.
    """
    if name == KAFKA:
        return kafka_probe(settings.model_copy(update={"kafka_url": url}))
    return redis_probe(settings.model_copy(update={"redis_url": url}))


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop.

    ``asyncio.run`` refuses to nest; a fault test calling ``start_server`` from an
    async test would hit that, so the coroutine always gets its own thread and loop.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="silvertine-probe") as pool:
        return pool.submit(asyncio.run, factory()).result()


def kafka_probe(settings: Settings) -> Callable[[], None]:
    """Build a readiness probe of ``settings.kafka_url``: a metadata round trip, not a connect."""
    host, _, port = settings.kafka_bootstrap[0].rpartition(":")

    async def metadata_round_trip() -> None:
        # Imported here: `silvertine stack status` should not pay for aiokafka.
        from silvertine_streams.kafka.clients import kafka_admin

        admin = kafka_admin(settings, role="probe", request_timeout_ms=2_000)
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    def probe() -> None:
        # A plain connect first: while the port is closed aiokafka would log an
        # error per attempt, which reads like a failure on a normal start-up.
        socket.create_connection((host, int(port)), timeout=1.0).close()
        _run_coroutine(metadata_round_trip)

    return probe


def redis_probe(settings: Settings) -> Callable[[], None]:
    """Build a readiness probe of ``settings.redis_url``: PING answers (not LOADING), AOF is on."""

    async def appendonly() -> str | None:
        from silvertine_streams.redis.clients import redis_client

        client = redis_client(settings, role="probe", read_timeout_s=2.0, decode_responses=True)
        try:
            await client.ping()
            value: str | None = (await client.config_get("appendonly")).get("appendonly")
            return value
        finally:
            await client.aclose()

    def probe() -> None:
        value = _run_coroutine(appendonly)
        if value != "yes":
            # Not a "not yet" but fatal: the canonical log would not survive a restart.
            raise EmbeddedServerError(
                REDIS, f"runs without AOF (CONFIG GET appendonly = {value!r}, need 'yes')"
            )

    return probe
