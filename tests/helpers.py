"""Helpers for tests: wait for a condition with a deadline (never sleep and hope); parse source."""

from __future__ import annotations

import ast
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

_NOT_OBSERVED = "<never observed>"


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition not met",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns a truthy value; return that value.

    Args:
        predicate: the condition; its return value is what gets reported.
        timeout: seconds before giving up.
        interval: seconds between calls.
        message: what was awaited, for the failure message.
        ignore: exceptions that mean "not yet" (e.g. ``ConnectionError``); the
            last one is reported as the observed value. Others propagate.

    Raises:
        AssertionError: the deadline passed; names ``message`` and the last value.
    """
    deadline = time.monotonic() + timeout
    last: object = _NOT_OBSERVED
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message}: not true after {timeout:g}s; last value: {last!r}")
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition not met",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Await ``predicate()`` until it returns a truthy value; return that value.

    Like :func:`wait_for`, but the predicate is a coroutine function and the
    pause between calls yields to the event loop. A call that hangs is cut off
    at the deadline too.

    Raises:
        AssertionError: the deadline passed; names ``message`` and the last value.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = _NOT_OBSERVED
    while True:
        remaining = deadline - loop.time()
        try:
            value = await asyncio.wait_for(predicate(), timeout=max(remaining, 0.001))
        except ignore as exc:
            last = exc
        except TimeoutError:
            if loop.time() < deadline:
                raise  # the predicate's own timeout, not our deadline
            last = f"<predicate still running at the deadline; before that: {last!r}>"
        else:
            if value:
                return value
            last = value
        if loop.time() >= deadline:
            raise AssertionError(f"{message}: not true after {timeout:g}s; last value: {last!r}")
        await asyncio.sleep(interval)


def parse_source(source: str) -> ast.Module:
    """``ast.parse`` with the cyclic GC held off.

    CPython 3.11 raises "SystemError: AST constructor recursion depth mismatch"
    when a garbage collection inside the parser runs finalizers of earlier tests'
    objects (a Faust app, its producer) that change the recursion depth.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if enabled:
            gc.enable()
