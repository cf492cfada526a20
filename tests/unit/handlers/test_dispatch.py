"""Unit tests for silvertine_streams.handlers.dispatch (the registry's own tests
are in test_registry.py).

Dispatcher tests are async (pytest-asyncio auto mode) and use no I/O. Hanging
handlers wait on an ``asyncio.Event`` that never fires; every such test bounds
itself with ``asyncio.timeout`` so a broken dispatcher fails instead of hanging
the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest

from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.handlers.dispatch import HandlerDispatcher
from silvertine_streams.handlers.registry import HandlerPriority, HandlerRegistry, Subscription

ORDER = "order"
FILL = "fill"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def async_noop(event: Any) -> None:
    pass


def test_dispatcher_rejects_bad_settings() -> None:
    registry = HandlerRegistry()
    with pytest.raises(ValueError):
        HandlerDispatcher(registry, timeout_s=0)
    with pytest.raises(ValueError):
        HandlerDispatcher(registry, timeout_s=1, failure_threshold=0)


# --------------------------------------------------------------------------- dispatch


async def test_no_handlers_gives_an_empty_report() -> None:
    dispatcher = HandlerDispatcher(HandlerRegistry(), timeout_s=1.0)
    report = await dispatcher.dispatch([1, 2, 3], ORDER)
    assert (report.event_type, report.events, report.handlers) == (ORDER, 3, {})
    assert report.failed == 0


async def test_every_event_reaches_every_handler_in_order() -> None:
    registry = HandlerRegistry()
    seen_sync: list[int] = []
    seen_async: list[int] = []

    tasks: list[asyncio.Task[Any] | None] = []

    async def record(event: int) -> None:
        seen_async.append(event)
        tasks.append(asyncio.current_task())

    sync_id = registry.subscribe(seen_sync.append, [ORDER])
    async_id = registry.subscribe(record, [ORDER], HandlerPriority.HIGH)
    report = await HandlerDispatcher(registry, timeout_s=1.0).dispatch([1, 2, 3], ORDER)
    assert seen_sync == seen_async == [1, 2, 3]
    assert tasks == [asyncio.current_task()] * 3  # a lone handler is awaited, not spawned
    assert report.handlers[sync_id].calls == 3
    assert report.handlers[async_id].calls == 3
    assert report.handlers[async_id].priority is HandlerPriority.HIGH
    assert report.handlers[async_id].latency_s > 0


async def test_priority_groups_finish_before_the_next_starts() -> None:
    registry = HandlerRegistry()
    log: list[str] = []

    def tracer(label: str) -> Any:
        async def handler(event: int) -> None:
            log.append(f"{label}:start:{event}")
            # Yield several times: a LOW handler started early would get in here.
            for _ in range(3):
                await asyncio.sleep(0)
            log.append(f"{label}:end:{event}")

        return handler

    # Subscribed lowest first, so subscription order cannot explain the result.
    registry.subscribe(tracer("low"), [ORDER], HandlerPriority.LOW)
    registry.subscribe(tracer("normal"), [ORDER], HandlerPriority.NORMAL)
    registry.subscribe(tracer("high"), [ORDER], HandlerPriority.HIGH)
    registry.subscribe(tracer("critical"), [ORDER], HandlerPriority.CRITICAL)
    await HandlerDispatcher(registry, timeout_s=1.0).dispatch([1, 2], ORDER)
    expected = [
        f"{label}:{step}:{event}"
        for event in (1, 2)
        for label in ("critical", "high", "normal", "low")
        for step in ("start", "end")
    ]
    assert log == expected


async def test_handlers_of_one_group_run_concurrently() -> None:
    registry = HandlerRegistry()
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def a(event: Any) -> None:
        a_started.set()
        await b_started.wait()  # deadlocks (times out) if b cannot run meanwhile

    async def b(event: Any) -> None:
        b_started.set()
        await a_started.wait()

    a_id = registry.subscribe(a, [ORDER])
    b_id = registry.subscribe(b, [ORDER])
    async with asyncio.timeout(5):
        report = await HandlerDispatcher(registry, timeout_s=1.0).dispatch(["e"], ORDER)
    assert report.handlers[a_id].timeouts == report.handlers[b_id].timeouts == 0
    assert report.failed == 0


@pytest.mark.parametrize("companions", [0, 1])
async def test_hanging_handler_is_timed_out(companions: int) -> None:
    """Covers both the direct-await path (alone) and the gather path (with a companion)."""
    registry = HandlerRegistry()
    never = asyncio.Event()
    after: list[Any] = []

    async def hang(event: Any) -> None:
        await never.wait()

    hang_id = registry.subscribe(hang, [ORDER], HandlerPriority.CRITICAL)
    for _ in range(companions):
        registry.subscribe(async_noop, [ORDER], HandlerPriority.CRITICAL)
    registry.subscribe(after.append, [ORDER], HandlerPriority.LOW)
    dispatcher = HandlerDispatcher(registry, timeout_s=0.05)
    started = time.monotonic()
    async with asyncio.timeout(2):
        report = await dispatcher.dispatch(["e"], ORDER)
    assert time.monotonic() - started < 1.0
    stats = report.handlers[hang_id]
    assert (stats.calls, stats.timeouts, stats.failures) == (1, 1, 0)
    assert isinstance(stats.last_error, TimeoutError)
    assert stats.latency_s >= 0.05
    assert after == ["e"]  # the lower group still ran
    circuit = dispatcher.circuit(hang_id)
    assert circuit is not None and circuit.failures_total == 1


async def test_raising_handler_is_isolated() -> None:
    registry = HandlerRegistry()
    calls: list[str] = []

    async def boom(event: Any) -> None:
        raise ValueError(f"bad {event}")

    def sync_boom(event: Any) -> None:
        raise RuntimeError("sync bad")

    async def fine(event: Any) -> None:
        calls.append(f"fine:{event}")

    boom_id = registry.subscribe(boom, [ORDER], HandlerPriority.HIGH)
    sync_id = registry.subscribe(sync_boom, [ORDER], HandlerPriority.HIGH)
    registry.subscribe(fine, [ORDER], HandlerPriority.HIGH)
    registry.subscribe(lambda e: calls.append(f"low:{e}"), [ORDER], HandlerPriority.LOW)
    report = await HandlerDispatcher(registry, timeout_s=1.0).dispatch([1, 2], ORDER)
    assert calls == ["fine:1", "low:1", "fine:2", "low:2"]
    assert (report.handlers[boom_id].failures, report.handlers[boom_id].timeouts) == (2, 0)
    assert isinstance(report.handlers[boom_id].last_error, ValueError)
    assert str(report.handlers[boom_id].last_error) == "bad 2"
    assert isinstance(report.handlers[sync_id].last_error, RuntimeError)
    assert report.failed == 4


async def test_a_handlers_own_timeout_error_is_a_failure_not_a_timeout() -> None:
    registry = HandlerRegistry()

    async def own_timeout(event: Any) -> None:
        raise TimeoutError("upstream timed out")

    handler_id = registry.subscribe(own_timeout, [ORDER])
    report = await HandlerDispatcher(registry, timeout_s=1.0).dispatch(["e"], ORDER)
    assert (report.handlers[handler_id].failures, report.handlers[handler_id].timeouts) == (1, 0)


async def test_a_handler_raising_cancelled_error_by_itself_is_a_failure() -> None:
    registry = HandlerRegistry()
    after: list[Any] = []

    async def cancels(event: Any) -> None:
        raise asyncio.CancelledError

    handler_id = registry.subscribe(cancels, [ORDER])
    registry.subscribe(after.append, [ORDER], HandlerPriority.LOW)
    report = await HandlerDispatcher(registry, timeout_s=1.0).dispatch(["e"], ORDER)
    assert report.handlers[handler_id].failures == 1
    assert after == ["e"]


@pytest.mark.parametrize("companions", [0, 1])
async def test_cancelling_the_caller_propagates(companions: int) -> None:
    registry = HandlerRegistry()
    entered = asyncio.Event()

    async def hang(event: Any) -> None:
        entered.set()
        await asyncio.Event().wait()

    registry.subscribe(hang, [ORDER])
    for _ in range(companions):
        registry.subscribe(async_noop, [ORDER])
    dispatcher = HandlerDispatcher(registry, timeout_s=60.0)
    task = asyncio.create_task(dispatcher.dispatch(["e"], ORDER))
    async with asyncio.timeout(2):
        await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_slow_sync_handler_counts_as_a_timeout_after_the_fact() -> None:
    registry = HandlerRegistry()

    def blocking(event: Any) -> None:
        time.sleep(0.03)  # simulates a handler that blocks the loop

    handler_id = registry.subscribe(blocking, [ORDER])
    report = await HandlerDispatcher(registry, timeout_s=0.01).dispatch(["e"], ORDER)
    stats = report.handlers[handler_id]
    assert (stats.calls, stats.timeouts, stats.failures) == (1, 1, 0)
    assert isinstance(stats.last_error, TimeoutError)


async def test_sync_callable_returning_a_coroutine_is_awaited_under_the_timeout() -> None:
    registry = HandlerRegistry()
    seen: list[Any] = []
    never = asyncio.Event()

    async def record(event: Any) -> None:
        seen.append(event)

    async def hang(event: Any) -> None:
        await never.wait()

    ok_id = registry.subscribe(lambda e: record(e), [ORDER])
    hang_id = registry.subscribe(lambda e: hang(e), [ORDER], HandlerPriority.LOW)
    async with asyncio.timeout(2):
        report = await HandlerDispatcher(registry, timeout_s=0.05).dispatch(["e"], ORDER)
    assert seen == ["e"]
    assert report.handlers[ok_id].failures == 0
    assert report.handlers[hang_id].timeouts == 1


async def test_open_circuit_skips_the_handler_then_a_trial_closes_it() -> None:
    registry = HandlerRegistry()
    clock = FakeClock()
    healthy = False
    calls: list[int] = []
    transitions: list[tuple[Subscription, CircuitState, CircuitState]] = []

    async def flaky(event: int) -> None:
        calls.append(event)
        if not healthy:
            raise ConnectionError("down")

    others: list[int] = []
    flaky_id = registry.subscribe(flaky, [ORDER], name="flaky")
    registry.subscribe(others.append, [ORDER])
    dispatcher = HandlerDispatcher(
        registry,
        timeout_s=1.0,
        failure_threshold=2,
        reset_s=10.0,
        now=clock,
        on_transition=lambda sub, old, new: transitions.append((sub, old, new)),
    )
    report = await dispatcher.dispatch([1, 2, 3, 4, 5], ORDER)
    stats = report.handlers[flaky_id]
    assert (stats.calls, stats.failures, stats.skipped_open) == (2, 2, 3)
    assert calls == [1, 2]
    assert others == [1, 2, 3, 4, 5]  # its group mate is unaffected
    assert report.skipped_open == 3
    assert [(sub.name, old, new) for sub, old, new in transitions] == [
        ("flaky", CircuitState.CLOSED, CircuitState.OPEN)
    ]

    clock.t = 10.0
    healthy = True
    report = await dispatcher.dispatch([6, 7], ORDER)
    assert calls == [1, 2, 6, 7]
    assert report.handlers[flaky_id].skipped_open == 0
    assert [(old, new) for _, old, new in transitions[1:]] == [
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


async def test_unsubscribed_handler_is_no_longer_called_and_loses_its_circuit() -> None:
    registry = HandlerRegistry()
    seen: list[int] = []
    handler_id = registry.subscribe(seen.append, [ORDER])
    dispatcher = HandlerDispatcher(registry, timeout_s=1.0)
    await dispatcher.dispatch([1], ORDER)
    assert dispatcher.circuit(handler_id) is not None
    assert registry.unsubscribe(handler_id)
    report = await dispatcher.dispatch([2], ORDER)
    assert seen == [1]
    assert report.handlers == {}
    assert dispatcher.circuit(handler_id) is None


async def test_a_handler_subscribed_later_is_picked_up() -> None:
    registry = HandlerRegistry()
    dispatcher = HandlerDispatcher(registry, timeout_s=1.0)
    await dispatcher.dispatch([1], ORDER)
    seen: list[int] = []
    registry.subscribe(seen.append, [ORDER])
    await dispatcher.dispatch([2], ORDER)
    assert seen == [2]


async def test_circuits_are_per_handler_and_survive_across_event_types() -> None:
    registry = HandlerRegistry()

    async def boom(event: Any) -> None:
        raise ValueError

    both_id = registry.subscribe(boom, [ORDER, FILL])
    dispatcher = HandlerDispatcher(registry, timeout_s=1.0, failure_threshold=2)
    await dispatcher.dispatch([1], ORDER)
    report = await dispatcher.dispatch([1, 2], FILL)
    # One breaker per handler: the ORDER failure counts toward FILL's opening.
    assert (report.handlers[both_id].calls, report.handlers[both_id].skipped_open) == (1, 1)


# --------------------------------------------------------------------------- timer re-arming


async def test_the_timeout_is_per_call_not_per_batch() -> None:
    """Many calls each well inside the timeout, together far beyond it: none time out."""
    registry = HandlerRegistry()

    async def steady(event: Any) -> None:
        await asyncio.sleep(0.02)

    handler_id = registry.subscribe(steady, [ORDER])
    report = await HandlerDispatcher(registry, timeout_s=0.2).dispatch(list(range(15)), ORDER)
    assert (report.handlers[handler_id].calls, report.handlers[handler_id].timeouts) == (15, 0)


async def test_one_hanging_call_in_a_long_batch_times_out_alone() -> None:
    """The hang starts before the first call's deadline: the timer must re-arm for it.

    Events 0-2 take ~60 ms of the 100 ms timeout, so the timer set for event 0
    fires while event 3 hangs but before event 3's own deadline.
    """
    registry = HandlerRegistry()
    never = asyncio.Event()
    done: list[int] = []

    async def mostly_fast(event: int) -> None:
        if event == 3:
            await never.wait()
        await asyncio.sleep(0.02 if event < 3 else 0)
        done.append(event)

    handler_id = registry.subscribe(mostly_fast, [ORDER])
    async with asyncio.timeout(2):
        report = await HandlerDispatcher(registry, timeout_s=0.1).dispatch(list(range(30)), ORDER)
    assert done == [e for e in range(30) if e != 3]
    assert (report.handlers[handler_id].timeouts, report.handlers[handler_id].failures) == (1, 0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancel was taken back


async def test_a_handler_swallowing_the_cancel_is_counted_and_the_task_is_clean() -> None:
    registry = HandlerRegistry()
    never = asyncio.Event()
    after: list[Any] = []

    async def stubborn(event: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the bad behaviour under test
            await never.wait()

    async def then_cancels_itself(event: Any) -> None:
        raise asyncio.CancelledError  # must still be seen as the handler's own failure

    stubborn_id = registry.subscribe(stubborn, [ORDER], HandlerPriority.HIGH)
    own_id = registry.subscribe(then_cancels_itself, [ORDER], HandlerPriority.NORMAL)
    registry.subscribe(after.append, [ORDER], HandlerPriority.LOW)
    async with asyncio.timeout(2):
        report = await HandlerDispatcher(registry, timeout_s=0.05).dispatch(["e"], ORDER)
    assert report.handlers[stubborn_id].timeouts == 1
    assert report.handlers[own_id].failures == 1
    assert after == ["e"]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_an_outer_cancel_arriving_with_the_timeout_wins() -> None:
    registry = HandlerRegistry()
    never = asyncio.Event()

    async def hang_then_outer_cancel(event: Any) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            # Someone cancels the dispatching task in the same breath as the
            # timeout fired: the dispatcher must let that cancellation out.
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            raise

    after: list[Any] = []
    registry.subscribe(hang_then_outer_cancel, [ORDER])
    registry.subscribe(after.append, [ORDER], HandlerPriority.LOW)
    task = asyncio.create_task(
        HandlerDispatcher(registry, timeout_s=0.05).dispatch(["e", "f"], ORDER)
    )
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert after == []  # stopped at once, not after finishing the batch


async def test_a_sync_and_a_hanging_async_handler_in_one_group() -> None:
    registry = HandlerRegistry()
    never = asyncio.Event()
    seen: list[Any] = []

    tasks: list[asyncio.Task[Any] | None] = []

    async def hang(event: Any) -> None:
        tasks.append(asyncio.current_task())
        await never.wait()

    sync_id = registry.subscribe(seen.append, [ORDER])
    hang_id = registry.subscribe(hang, [ORDER])
    async with asyncio.timeout(2):
        report = await HandlerDispatcher(registry, timeout_s=0.05).dispatch([1, 2], ORDER)
    assert seen == [1, 2]
    # Only one async handler in the group: awaited in our task, no task made.
    assert tasks == [asyncio.current_task()] * 2
    assert report.handlers[sync_id].failures == 0
    assert report.handlers[hang_id].timeouts == 2


@pytest.mark.parametrize(("outer_s", "inner_s"), [(1.0, 0.05), (0.05, 1.0)])
async def test_nested_dispatch_times_out_at_the_right_level(outer_s: float, inner_s: float) -> None:
    """A handler that dispatches again (same task): each level owns its own timeouts."""
    never = asyncio.Event()
    inner_registry = HandlerRegistry()

    async def hang(event: Any) -> None:
        await never.wait()

    inner_id = inner_registry.subscribe(hang, [FILL])
    inner = HandlerDispatcher(inner_registry, timeout_s=inner_s)
    inner_reports = []

    async def fan_out(event: Any) -> None:
        inner_reports.append(await inner.dispatch([event], FILL))

    outer_registry = HandlerRegistry()
    outer_id = outer_registry.subscribe(fan_out, [ORDER])
    async with asyncio.timeout(3):
        report = await HandlerDispatcher(outer_registry, timeout_s=outer_s).dispatch(["e"], ORDER)
    if inner_s < outer_s:
        assert report.handlers[outer_id].timeouts == 0
        assert inner_reports[0].handlers[inner_id].timeouts == 1
    else:
        assert report.handlers[outer_id].timeouts == 1
        assert inner_reports == []  # the inner dispatch was cut short by the outer timeout
