"""The dispatcher's batch loops for one handler: same outcomes as event by event.

A batch whose event type has exactly one handler runs in one loop
(``HandlerDispatcher._run_sync``, ``_run_async``); the sync one skips the
circuit's calls while it is closed and clean. These tests pin that the
shortcuts change no outcome:
failures open the circuit mid-batch, an open circuit skips, a trial closes it,
overruns count, and a circuit shared with another event type's dispatch is
respected when the handler awaits.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.handlers import HandlerDispatcher, HandlerRegistry

ORDER = "order"
FILL = "fill"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_a_batch_reaches_one_sync_handler_in_order() -> None:
    registry = HandlerRegistry()
    seen: list[int] = []
    handler_id = registry.subscribe(seen.append, [ORDER])
    report = await HandlerDispatcher(registry).dispatch(range(1000), ORDER)
    assert seen == list(range(1000))
    stats = report.handlers[handler_id]
    assert (stats.calls, stats.failures, stats.timeouts, stats.skipped_open) == (1000, 0, 0, 0)
    assert stats.latency_s > 0


async def test_failures_open_the_circuit_mid_batch_and_the_rest_is_skipped() -> None:
    registry = HandlerRegistry()
    calls: list[int] = []

    def fails_from_3(event: int) -> None:
        calls.append(event)
        if event >= 3:
            raise ValueError(f"bad {event}")

    handler_id = registry.subscribe(fails_from_3, [ORDER])
    dispatcher = HandlerDispatcher(registry, failure_threshold=2, reset_s=10.0, now=FakeClock())
    report = await dispatcher.dispatch(list(range(10)), ORDER)
    stats = report.handlers[handler_id]
    assert calls == [0, 1, 2, 3, 4]
    assert (stats.calls, stats.failures, stats.skipped_open) == (5, 2, 5)
    assert str(stats.last_error) == "bad 4"
    circuit = dispatcher.circuit(handler_id)
    assert circuit is not None and circuit.state is CircuitState.OPEN


async def test_an_async_handler_opens_its_circuit_mid_batch_too() -> None:
    registry = HandlerRegistry()
    calls: list[int] = []

    async def fails_from_3(event: int) -> None:
        calls.append(event)
        if event >= 3:
            raise ValueError(f"bad {event}")

    handler_id = registry.subscribe(fails_from_3, [ORDER])
    dispatcher = HandlerDispatcher(registry, failure_threshold=2, reset_s=10.0, now=FakeClock())
    report = await dispatcher.dispatch(list(range(10)), ORDER)
    stats = report.handlers[handler_id]
    assert calls == [0, 1, 2, 3, 4]
    assert (stats.calls, stats.failures, stats.skipped_open) == (5, 2, 5)
    assert stats.latency_s > 0


async def test_a_success_after_a_failure_resets_the_count() -> None:
    registry = HandlerRegistry()

    def fails_on_odd(event: int) -> None:
        if event % 2:
            raise ValueError(event)

    handler_id = registry.subscribe(fails_on_odd, [ORDER])
    dispatcher = HandlerDispatcher(registry, failure_threshold=2)
    report = await dispatcher.dispatch(list(range(100)), ORDER)
    assert (report.handlers[handler_id].failures, report.handlers[handler_id].skipped_open) == (
        50, 0)
    circuit = dispatcher.circuit(handler_id)
    assert circuit is not None and circuit.state is CircuitState.CLOSED


async def test_an_open_circuit_skips_a_whole_batch_then_a_trial_closes_it() -> None:
    registry = HandlerRegistry()
    clock = FakeClock()
    healthy = False
    calls: list[int] = []

    def flaky(event: int) -> None:
        calls.append(event)
        if not healthy:
            raise ConnectionError("down")

    handler_id = registry.subscribe(flaky, [ORDER])
    dispatcher = HandlerDispatcher(registry, failure_threshold=1, reset_s=5.0, now=clock)
    await dispatcher.dispatch([1], ORDER)
    report = await dispatcher.dispatch([2, 3, 4], ORDER)
    assert report.handlers[handler_id].skipped_open == 3
    clock.t = 5.0
    healthy = True
    report = await dispatcher.dispatch([5, 6, 7], ORDER)
    assert calls == [1, 5, 6, 7]
    circuit = dispatcher.circuit(handler_id)
    assert circuit is not None and circuit.state is CircuitState.CLOSED


async def test_one_slow_call_in_a_batch_is_the_only_timeout() -> None:
    registry = HandlerRegistry()

    def slow_on_2(event: int) -> None:
        if event == 2:
            time.sleep(0.03)  # blocks the loop, as a bad sync handler would

    handler_id = registry.subscribe(slow_on_2, [ORDER])
    report = await HandlerDispatcher(registry, timeout_s=0.01).dispatch(list(range(5)), ORDER)
    stats = report.handlers[handler_id]
    assert (stats.calls, stats.timeouts, stats.failures) == (5, 1, 0)
    assert isinstance(stats.last_error, TimeoutError)


async def test_a_circuit_shared_across_types_is_respected_when_the_handler_awaits() -> None:
    """One handler on two types: the other type's dispatch opens the circuit mid-batch."""
    registry = HandlerRegistry()
    gate = asyncio.Event()
    orders: list[int] = []

    async def wait_for_gate(event: int) -> None:
        await gate.wait()

    def handler(event: Any) -> Any:
        if event == "fill":
            raise RuntimeError("fills fail")
        orders.append(event)
        return wait_for_gate(event) if event == 0 else None

    handler_id = registry.subscribe(handler, [ORDER, FILL])
    dispatcher = HandlerDispatcher(registry, failure_threshold=1, reset_s=60.0)
    order_task = asyncio.create_task(dispatcher.dispatch([0, 1, 2], ORDER))
    await asyncio.sleep(0)  # the order batch is now waiting inside event 0
    await dispatcher.dispatch(["fill"], FILL)  # opens the shared circuit
    gate.set()
    report = await order_task
    assert orders == [0]
    assert report.handlers[handler_id].skipped_open == 2
