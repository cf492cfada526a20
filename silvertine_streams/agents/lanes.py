"""Priority lanes in a worker: lower lanes yield while critical work is waiting.

All agents share one event loop. Under a market-data flood the market-data
agent always has a message ready, and an order would wait behind it at every
turn. So before each lower-lane message the agent checks whether critical work
is queued or in flight; if so it steps aside until the critical queues are
empty, for at most ``SILVERTINE_LANE_MAX_PAUSE_S`` at a stretch (then it runs
regardless: no lane starves). While it waits, its stream buffer fills and
Faust's own flow control stops fetching its partitions.

Why not ``consumer.pause_partitions()``: Faust drops records that were already
fetched for a partition that leaves the active set while a fetch is in flight
(``faust/transport/consumer.py``, the ``tp in active_partitions`` test after
``_wait_next_records``), and aiokafka's position has moved past them, so the
partition stalls with unacknowledged gaps. Seen here as stuck market data and
lost system events; the agent-level yield has no such race.
The decisions are :class:`~silvertine_streams.domain.priority.LaneGate`'s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from silvertine_streams.domain.priority import LaneAction, LaneGate
from silvertine_streams.events import EventPriority
from silvertine_streams.observability.metrics import LANE_PAUSES

_STEP_ASIDE_S = 0.0005


class SizedQueue(Protocol):
    """What lanes read of a Faust stream buffer."""

    def qsize(self) -> int:
        """Messages waiting in the buffer."""
        ...


class LaneController:
    """Tracks critical work and makes lower lanes wait for it.

    Args:
        max_pause_s: the longest stretch a lower lane yields.
    """

    def __init__(self, max_pause_s: float) -> None:
        self.gate = LaneGate(max_pause_s=max_pause_s, min_run_s=max_pause_s / 5)
        self._critical_queues: list[SizedQueue] = []
        self.in_flight = 0

    def is_critical(self, lane: EventPriority) -> bool:
        """Whether a lane is the critical one."""
        return lane is EventPriority.CRITICAL

    def watch(self, queue: SizedQueue | None) -> None:
        """Count a critical agent's stream buffer as critical work."""
        if queue is not None:
            self._critical_queues.append(queue)

    def critical_waiting(self) -> bool:
        """Whether critical messages are queued or being processed."""
        return self.in_flight > 0 or any(q.qsize() for q in self._critical_queues)

    async def yield_to_critical(self) -> None:
        """Before a lower-lane message: wait while critical work is waiting (bounded)."""
        action = self.gate.decide(self.critical_waiting(), time.monotonic())
        self._apply(action)
        while self.gate.paused_since is not None:
            await asyncio.sleep(_STEP_ASIDE_S)
            self._apply(self.gate.decide(self.critical_waiting(), time.monotonic()))

    async def slice_break(self) -> None:
        """Inside a lower-lane envelope: let the loop deliver critical messages, then yield.

        The ``sleep(0)`` lets Faust hand over a critical message that has just
        arrived (its queue is empty until then); a 500-event envelope would
        otherwise hold the loop for ~3 ms of CPU at a stretch.
        """
        await asyncio.sleep(0)
        await self.yield_to_critical()

    def _apply(self, action: LaneAction) -> None:
        if action is LaneAction.PAUSE:
            LANE_PAUSES.inc()
