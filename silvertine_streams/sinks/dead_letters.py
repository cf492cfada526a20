"""The dead-letter sink: rejected payloads go to the Redis stream ``dlq`` with a reason.

Each letter becomes one entry with the fields ``payload`` (the bytes as
received), ``reason`` (for a person) and ``origin`` (where it was read). A
batch goes in one ``MULTI``/``EXEC`` pipeline, so it lands whole or not at all.

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

from redis.asyncio import Redis

from silvertine_streams.sinks.keys import DLQ_STREAM
from silvertine_streams.sinks.retry import Backoff, retry_transient

log = logging.getLogger(__name__)


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

    def __init__(self, redis: Redis, retry_max_s: float = 2.0) -> None:
        """Build the sink; no I/O happens until the first write.

        Args:
            redis: an asyncio client; give it socket timeouts so a hung server
                turns into a retry instead of a hang.
            retry_max_s: the cap on the delay between attempts during an outage.
        """
        self.stream = DLQ_STREAM
        self.retries = 0
        self.last_error: BaseException | None = None
        self.written = 0
        self._redis = redis
        self._backoff = Backoff(initial_s=min(0.05, retry_max_s), max_s=retry_max_s)
        self._closing = asyncio.Event()

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
        await retry_transient(
            partial(self._call, letters),
            self._backoff,
            on_retry=self._on_retry,
            closing=self._closing,
            name=self.stream,
        )
        self.written += len(letters)

    async def _call(self, letters: Sequence[DeadLetter]) -> None:
        """Make one attempt: every XADD in one MULTI/EXEC round trip."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for payload, reason, origin in letters:
                pipe.xadd(self.stream, {"payload": payload, "reason": reason, "origin": origin})
            await pipe.execute()

    def _on_retry(self, error: BaseException, attempt: int, delay_s: float) -> None:
        self.retries += 1
        self.last_error = error
        log.warning(
            "%s: write attempt %d failed (%r); retrying in %.2fs",
            self.stream,
            attempt,
            error,
            delay_s,
        )
