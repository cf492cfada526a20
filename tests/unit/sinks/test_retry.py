"""Backoff policy, transient-error classification, and the retry loop (no servers)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import pytest
from redis import exceptions as redis_errors
from redis._parsers.base import BaseParser

from silvertine_streams.errors import SilvertineError
from silvertine_streams.sinks.retry import (
    Backoff,
    SinkClosed,
    count_retry,
    is_transient_redis_error,
    retry_transient,
)

# --- Backoff (pure) ---------------------------------------------------------


def test_backoff_without_jitter_doubles_up_to_the_cap() -> None:
    delays = Backoff(initial_s=0.1, max_s=1.0, factor=2.0, jitter=0.0).delays()
    assert list(itertools.islice(delays, 7)) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_jitter_shortens_by_at_most_its_fraction() -> None:
    backoff = Backoff(initial_s=1.0, max_s=1.0, factor=2.0, jitter=0.25)
    assert next(backoff.delays(rand=lambda: 0.0)) == pytest.approx(1.0)
    assert next(backoff.delays(rand=lambda: 0.999999)) == pytest.approx(0.75, abs=1e-5)
    assert next(backoff.delays(rand=lambda: 0.5)) == pytest.approx(0.875)


def test_backoff_default_random_stays_in_bounds() -> None:
    backoff = Backoff(initial_s=0.5, max_s=2.0, factor=3.0, jitter=0.5)
    for delay, base in zip(backoff, [0.5, 1.5, 2.0, 2.0, 2.0, 2.0], strict=False):
        assert base * 0.5 <= delay <= base


def test_backoff_survives_a_very_long_outage() -> None:
    delays = Backoff(initial_s=1e-3, max_s=2.0, factor=10.0, jitter=0.0).delays()
    assert list(itertools.islice(delays, 10_000))[-1] == 2.0  # no overflow to inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": 3.0, "max_s": 2.0},
        {"factor": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


# --- classification ---------------------------------------------------------


def reply_error(wire: str) -> redis_errors.RedisError:
    """Build the error redis-py raises for the error reply ``-<wire>``."""
    error = BaseParser.parse_error(wire)
    assert isinstance(error, redis_errors.RedisError)
    return error


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ConnectionError("Connection refused"),
        redis_errors.TimeoutError("Timeout reading from socket"),
        ConnectionResetError(),
        TimeoutError(),
        reply_error("LOADING Redis is loading the dataset in memory"),
        reply_error("BUSY Redis is busy running a script. You can only call SCRIPT KILL"),
        reply_error("READONLY You can't write against a read only replica."),
        reply_error("TRYAGAIN Multiple keys request during rehashing of slot"),
        reply_error("CLUSTERDOWN The cluster is down"),
        reply_error("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no"),
        reply_error("NOREPLICAS Not enough good replicas to write."),
        reply_error("OOM command not allowed when used memory > 'maxmemory'."),
        reply_error("MISCONF Errors writing to the AOF file: No space left on device"),
    ],
    ids=str,
)
def test_transient_errors(error: BaseException) -> None:
    assert is_transient_redis_error(error)


@pytest.mark.parametrize(
    "error",
    [
        reply_error("WRONGTYPE Operation against a key holding the wrong kind of value"),
        reply_error("ERR Error running script (call to f_0): @user_script:1: oops"),
        reply_error("BUSYGROUP Consumer Group name already exists"),
        reply_error("NOSCRIPT No matching script. Please use EVAL."),
        reply_error("WRONGPASS invalid username-password pair or user is disabled."),
        reply_error("NOAUTH Authentication required."),
        reply_error("NOPERM this user has no permissions to run the 'evalsha' command"),
        redis_errors.AuthenticationError("invalid password"),
        redis_errors.DataError("Invalid input of type: 'NoneType'"),
        ValueError("bad record"),
    ],
    ids=str,
)
def test_errors_that_retrying_cannot_fix(error: BaseException) -> None:
    assert not is_transient_redis_error(error)


# --- retry_transient --------------------------------------------------------

FAST = Backoff(initial_s=0.001, max_s=0.002, jitter=0.0)


class Flaky:
    """Fails with the given errors in turn, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retries_transient_errors_until_success() -> None:
    fn = Flaky(redis_errors.ConnectionError("down"), redis_errors.BusyLoadingError("loading"))
    seen: list[tuple[str, int, float]] = []
    result = await retry_transient(
        fn, FAST, on_retry=lambda e, n, d: seen.append((type(e).__name__, n, d))
    )
    assert result == "ok"
    assert fn.calls == 3
    assert seen == [("ConnectionError", 1, 0.001), ("BusyLoadingError", 2, 0.002)]


async def test_non_transient_error_raises_at_once() -> None:
    fn = Flaky(redis_errors.ResponseError("WRONGTYPE nope"))
    with pytest.raises(redis_errors.ResponseError, match="WRONGTYPE"):
        await retry_transient(fn, FAST, closing=asyncio.Event())
    assert fn.calls == 1


async def test_closed_before_first_attempt_raises_without_calling() -> None:
    closing = asyncio.Event()
    closing.set()
    fn = Flaky()
    with pytest.raises(SinkClosed) as info:
        await retry_transient(fn, FAST, closing=closing, name="log:order")
    assert fn.calls == 0
    assert info.value.sink == "log:order"
    assert isinstance(info.value, SilvertineError)


async def test_close_interrupts_the_sleep_between_attempts() -> None:
    closing = asyncio.Event()

    async def always_down() -> str:
        raise redis_errors.ConnectionError("down")

    sleeping = asyncio.Event()
    long_sleep = Backoff(initial_s=60.0, max_s=60.0)
    task = asyncio.create_task(
        retry_transient(
            always_down, long_sleep, on_retry=lambda e, n, d: sleeping.set(), closing=closing
        )
    )
    await asyncio.wait_for(sleeping.wait(), timeout=5)  # failed once, now sleeping 60 s
    closing.set()
    with pytest.raises(SinkClosed) as info:
        await asyncio.wait_for(task, timeout=5)
    assert info.value.attempts == 1
    assert isinstance(info.value.last_error, redis_errors.ConnectionError)


async def test_close_cancels_an_attempt_in_flight() -> None:
    closing = asyncio.Event()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hangs() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    task = asyncio.create_task(retry_transient(hangs, FAST, closing=closing))
    await asyncio.wait_for(started.wait(), timeout=5)
    closing.set()
    with pytest.raises(SinkClosed):
        await asyncio.wait_for(task, timeout=5)
    assert cancelled.is_set()


async def test_attempt_that_finished_wins_over_a_later_close() -> None:
    closing = asyncio.Event()

    async def lands_then_closes() -> str:
        closing.set()
        return "landed"

    assert await retry_transient(lands_then_closes, FAST, closing=closing) == "landed"


async def test_outer_cancel_takes_the_attempt_down() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hangs() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    task = asyncio.create_task(retry_transient(hangs, FAST, closing=asyncio.Event()))
    await asyncio.wait_for(started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(cancelled.wait(), timeout=5)


# --- count_retry (the sinks' on_retry) ----------------------------------------


@dataclass
class _Sink:
    stream: str = "log:order"
    retries: int = 0
    last_error: BaseException | None = None


def test_count_retry_counts_and_keeps_the_last_error() -> None:
    sink = _Sink()
    first, second = ConnectionError("refused"), TimeoutError("slow")
    count_retry(sink, first, 1, 0.05)
    count_retry(sink, second, 2, 0.1)
    assert sink.retries == 2
    assert sink.last_error is second
