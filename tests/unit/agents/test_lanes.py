"""Unit tests for silvertine_streams.agents.lanes: lower lanes step aside while
critical work is queued or in flight, for a bounded time.

Critical work is simulated: ``in_flight`` set by the test, and stand-in stream
buffers with a ``qsize``. The decisions themselves are LaneGate's (domain tests).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from silvertine_streams.agents.lanes import LaneController
from silvertine_streams.events.enums import EventPriority
from silvertine_streams.observability.metrics import REGISTRY


class Buffer:
    """A stream buffer holding ``size`` messages."""

    def __init__(self, size: int = 0) -> None:
        self.size = size

    def qsize(self) -> int:
        return self.size


def lane_pauses() -> float:
    value = REGISTRY.get_sample_value("silvertine_lane_pauses_total")
    assert value is not None
    return value


async def release_when_paused(controller: LaneController) -> None:
    """Finish the critical work once a lower lane has stepped aside for it."""
    while controller.gate.paused_since is None:
        await asyncio.sleep(0)
    controller.in_flight = 0


def test_only_the_critical_lane_is_critical() -> None:
    controller = LaneController(0.05)
    assert [p for p in EventPriority if controller.is_critical(p)] == [EventPriority.CRITICAL]


def test_critical_work_is_what_is_in_flight_or_queued_in_a_watched_buffer() -> None:
    controller = LaneController(0.05)
    buffer = Buffer()
    controller.watch(buffer)
    controller.watch(None)  # an agent whose stream has no buffer: nothing to watch
    assert not controller.critical_waiting()
    buffer.size = 2
    assert controller.critical_waiting()
    buffer.size = 0
    controller.in_flight = 1
    assert controller.critical_waiting()


async def test_a_lower_lane_runs_on_when_no_critical_work_waits() -> None:
    controller = LaneController(10.0)
    controller.watch(Buffer(0))
    before = lane_pauses()
    async with asyncio.timeout(1):
        await controller.yield_to_critical()
    assert controller.gate.pauses == 0 and lane_pauses() == before


async def test_a_lower_lane_waits_until_the_critical_work_is_done() -> None:
    controller = LaneController(10.0)
    controller.in_flight = 1
    before = lane_pauses()
    waiting = asyncio.create_task(controller.yield_to_critical())
    async with asyncio.timeout(2):
        while controller.gate.paused_since is None:
            await asyncio.sleep(0)
    assert not waiting.done()
    controller.in_flight = 0
    async with asyncio.timeout(2):
        await waiting
    assert controller.gate.pauses == 1 and lane_pauses() == before + 1
    assert controller.gate.elevations == 0  # it resumed because the work was done


async def test_a_lower_lane_never_waits_longer_than_the_maximum_pause() -> None:
    controller = LaneController(0.05)
    controller.watch(Buffer(5))  # critical work that never drains
    started = time.monotonic()
    async with asyncio.timeout(2):
        await controller.yield_to_critical()
    assert time.monotonic() - started >= 0.05
    assert controller.gate.elevations == 1  # it ran because it had waited long enough


async def test_a_slice_break_lets_a_critical_message_arrive_before_deciding() -> None:
    controller = LaneController(10.0)
    loop = asyncio.get_running_loop()
    # Faust hands the critical message over on the next loop turn: in flight from then on.
    loop.call_soon(setattr, controller, "in_flight", 1)
    releaser = asyncio.create_task(release_when_paused(controller))
    try:
        async with asyncio.timeout(2):
            await controller.slice_break()
    finally:
        releaser.cancel()
    assert controller.gate.pauses == 1


@pytest.mark.parametrize("critical_queued", [0, 3])
async def test_a_slice_break_without_critical_work_costs_one_loop_turn(
    critical_queued: int,
) -> None:
    controller = LaneController(10.0)
    buffer = Buffer(critical_queued)
    controller.watch(buffer)
    turns: list[str] = []
    asyncio.get_running_loop().call_soon(turns.append, "other work ran")
    if critical_queued:
        asyncio.get_running_loop().call_soon(setattr, buffer, "size", 0)
    async with asyncio.timeout(2):
        await controller.slice_break()
    assert turns == ["other work ran"]
    assert controller.gate.pauses == 0
