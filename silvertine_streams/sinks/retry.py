"""Retry with backoff for the Redis sinks.

Faust acknowledges an event when its agent raises, so a sink that raised on a
Redis outage would lose the batch. The sinks therefore retry transient errors
forever, with capped exponential backoff: a blocked ``write()`` is the engine's
backpressure. Only a shutdown (:class:`SinkClosed`) or an error that retrying
cannot fix (a script bug, ``WRONGTYPE``, bad credentials) ends the loop.

:class:`Backoff` is pure (no clock, no I/O); :func:`retry_transient` is the
async loop around it, and :func:`count_retry` what both sinks do on each retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from redis import exceptions as redis_errors

from silvertine_streams.errors import ReplicationTimeout, SilvertineError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Error codes Redis sends while it cannot serve writes *for now*: loading the
# AOF after a restart, a slow script, a cluster or replica failover, memory or
# disk full. Each clears without a change to our code, so the right reaction
# is to block (backpressure) and keep trying, loudly, rather than drop events.
TRANSIENT_REDIS_CODES: frozenset[str] = frozenset(
    {
        "LOADING",  # replaying the AOF after a restart
        "BUSY",  # another script exceeds lua-time-limit (not BUSYGROUP)
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "READONLY",  # we reached a replica during a failover
        "NOREPLICAS",  # min-replicas-to-write not met
        "OOM",  # maxmemory with noeviction: an operator must act, we must not drop
        "MISCONF",  # RDB/AOF write failing (disk full): same
    }
)


class SinkClosed(SilvertineError):
    """A sink was closed while a write had not landed yet.

    The records of that write are *not known to be stored*: the caller must not
    acknowledge them (they will be redelivered and the idempotent sink absorbs
    any part that did land).

    Attributes:
        sink: which sink, for a person (e.g. ``"log:order"``).
        attempts: how many attempts failed before the sink closed.
        last_error: the last transient error, if any attempt failed.
    """

    def __init__(self, sink: str, attempts: int, last_error: BaseException | None) -> None:
        self.sink = sink
        self.attempts = attempts
        self.last_error = last_error
        detail = f" after {attempts} failed attempts (last: {last_error!r})" if attempts else ""
        super().__init__(f"sink {sink} closed before the write landed{detail}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with proportional jitter.

    Delay *n* (from 0) is ``min(max_s, initial_s * factor**n)`` shortened by a
    random fraction of up to ``jitter`` of itself, so delays lie in
    ``[(1 - jitter) * d, d]`` and never exceed ``max_s``. Jitter spreads the
    reconnects of many workers after a shared Redis outage.

    Attributes:
        initial_s: the first delay before jitter, in seconds (> 0).
        max_s: the cap on every delay, in seconds (>= initial_s).
        factor: growth per attempt (>= 1).
        jitter: the largest fraction a delay is shortened by, in [0, 1].
    """

    initial_s: float = 0.05
    max_s: float = 2.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """Yield delays forever.

        Args:
            rand: a source of floats in ``[0, 1)``; inject one to make tests exact.
        """
        base = self.initial_s
        while True:
            yield base * (1.0 - self.jitter * rand())
            # Multiply only below the cap so a long outage cannot overflow to inf.
            if base < self.max_s:
                base = min(self.max_s, base * self.factor)

    def __iter__(self) -> Iterator[float]:
        return self.delays()


def is_transient_redis_error(exc: BaseException) -> bool:
    """Tell whether retrying the same Redis call later can succeed.

    Transient: lost or refused connections, timeouts, and the reply codes in
    :data:`TRANSIENT_REDIS_CODES`. Not transient: bad credentials, and every
    other reply error (``WRONGTYPE``, a script error, ``NOSCRIPT``…), which need
    a change of code or data and must surface.
    """
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        return False
    if isinstance(exc, ReplicationTimeout):
        return True  # replicas catching up, or back after a failover
    if isinstance(
        exc,
        redis_errors.ConnectionError  # includes BusyLoadingError (LOADING)
        | redis_errors.TimeoutError
        | ConnectionError
        | TimeoutError,
    ):
        return True
    if isinstance(exc, redis_errors.ResponseError):
        # redis-py strips the code into ``status_code`` for codes it knows and
        # leaves it at the head of the message for the others (e.g. BUSY).
        code = exc.status_code or str(exc).split(" ", 1)[0]
        return code in TRANSIENT_REDIS_CODES
    return False


class RetryCountingSink(Protocol):
    """A sink that exposes its failed write attempts, for metrics."""

    stream: str
    retries: int
    last_error: BaseException | None


def count_retry(
    sink: RetryCountingSink, error: BaseException, attempt: int, delay_s: float
) -> None:
    """Count a failed write attempt of ``sink`` and log it.

    Bound to a sink (``functools.partial(count_retry, sink)``) this is the
    ``on_retry`` the sinks give :func:`retry_transient`.
    """
    sink.retries += 1
    sink.last_error = error
    log.warning(
        "%s: write attempt %d failed (%r); retrying in %.2fs",
        sink.stream,
        attempt,
        error,
        delay_s,
    )


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    backoff: Backoff,
    is_transient: Callable[[BaseException], bool] = is_transient_redis_error,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    closing: asyncio.Event | None = None,
    name: str = "redis",
) -> T:
    """Await ``fn()`` until it succeeds, sleeping between transient failures.

    Args:
        fn: makes one attempt; called afresh for every attempt.
        backoff: the delays between attempts.
        is_transient: whether an error is worth another attempt; any other
            error propagates at once.
        on_retry: called as ``on_retry(error, attempt, delay_s)`` before each
            sleep (``attempt`` counts failures from 1), for counters and logs.
        closing: once set, no new attempt starts, a sleep or an attempt in
            flight is interrupted, and :class:`SinkClosed` is raised.
        name: names the sink in :class:`SinkClosed`.

    Returns:
        What the first successful attempt returned.

    Raises:
        SinkClosed: ``closing`` was set before an attempt succeeded.
    """
    delays = iter(backoff)
    failures = 0
    last_error: BaseException | None = None
    while True:
        if closing is not None and closing.is_set():
            raise SinkClosed(name, failures, last_error)
        try:
            if closing is None:
                return await fn()
            return await _unless_closed(fn(), closing, name, failures, last_error)
        except Exception as exc:
            if not is_transient(exc):
                raise
            last_error = exc
        failures += 1
        delay = next(delays)
        if on_retry is not None:
            on_retry(last_error, failures, delay)
        if closing is None:
            await asyncio.sleep(delay)
            continue
        try:
            await asyncio.wait_for(closing.wait(), delay)
        except TimeoutError:
            continue
        raise SinkClosed(name, failures, last_error)


async def _unless_closed(
    attempt: Awaitable[T],
    closing: asyncio.Event,
    name: str,
    failures: int,
    last_error: BaseException | None,
) -> T:
    """Await ``attempt``, cancelling it if ``closing`` is set first.

    An attempt can hang for seconds (a socket timeout, redis-py's own
    reconnect loop), and shutdown should not wait for it. Cancelling a Redis
    call is safe here: redis-py drops the connection, and a write that did land
    is absorbed on redelivery by the idempotent sink.
    """
    call = asyncio.ensure_future(attempt)
    waiter = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait((call, waiter), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # Our caller was cancelled: take both helpers down with it.
        call.cancel()
        waiter.cancel()
        raise
    waiter.cancel()
    if call.done():
        # Landed (or failed) before or together with the close: report that.
        return call.result()
    call.cancel()
    # Let redis-py finish its cleanup so no task outlives the sink.
    await asyncio.wait((call,))
    raise SinkClosed(name, failures, last_error)
