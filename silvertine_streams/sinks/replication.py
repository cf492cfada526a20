"""Waiting for Redis replicas after a sink's write (``SILVERTINE_REDIS_WAIT_REPLICAS``).

``WAIT n timeout`` blocks until ``n`` replicas acknowledged the writes *of the
connection it runs on*, up to the offset of that connection's last write that
was replicated. Two traps follow, and this module avoids both:

* A pooled client may run ``WAIT`` on another connection than the write: the
  write and the ``WAIT`` go out in one pipeline, on one connection.
* A script that wrote nothing (a redelivered batch: every event a duplicate)
  propagates nothing, so ``WAIT`` would only cover that connection's older
  writes — not the first, perhaps unreplicated, attempt of the same batch. So
  the pipeline overwrites a marker key (``sink:replicated``) right before the
  ``WAIT``: that write lands at the primary's current replication offset, which
  is past every write made before it, and the ``WAIT`` then covers them all.

A shortfall raises :class:`~silvertine_streams.errors.ReplicationTimeout`,
which the sinks retry like an outage: the batch is not acknowledged, and the
engine slows its intake, until enough replicas confirm (or the worker stops:
then the batch is redelivered, and the idempotent log absorbs it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from silvertine_streams.errors import ReplicationTimeout
from silvertine_streams.topics import REPLICATION_MARK

__all__ = ["ReplicaWait"]


class ReplicaWait:
    """Runs a write and a ``WAIT`` for ``replicas`` replicas on one connection.

    Args:
        replicas: replicas that must acknowledge (>= 1).
        timeout_ms: how long one ``WAIT`` lasts.
    """

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        if replicas < 1 or timeout_ms < 1:
            raise ValueError(f"replicas and timeout_ms must be >= 1, got {replicas}, {timeout_ms}")
        self.replicas = replicas
        self.timeout_ms = timeout_ms

    async def run(self, redis: Redis, sink: str, write: Callable[[Pipeline], object] | None,
                  on_write: Callable[[Any], object] | None = None) -> Any:
        """Queue ``write`` (if any), then the marker and ``WAIT``; return the write's reply.

        Args:
            redis: the sink's client.
            sink: names the sink in the error.
            write: queues the write command on the pipeline; None to only wait
                again for a write an earlier call made.
            on_write: given the write's reply when the write landed but the
                replicas fell short, so the caller can wait again without rewriting.

        Raises:
            ReplicationTimeout: fewer replicas acknowledged than asked for.
            redis.exceptions.RedisError: the write's own error (e.g. NOSCRIPT), or
                the marker's or WAIT's.
        """
        pipe = redis.pipeline(transaction=False)
        if write is not None:
            queued = write(pipe)
            if inspect.isawaitable(queued):  # an async Script queues itself when awaited
                await queued
        pipe.set(REPLICATION_MARK, sink)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        acknowledged = int(results[-1])
        if acknowledged < self.replicas:
            if write is not None and on_write is not None:
                on_write(results[0])
            raise ReplicationTimeout(sink, acknowledged, self.replicas)
        return results[0] if write is not None else None
