"""Priority lanes: which event types yield to which, and for how long (pure).

Orders and fills are critical; market data is bulk. When critical work is
waiting, the engine pauses fetching of lower lanes so the critical messages are
the next ones the worker reads and processes; when the critical queue is empty
it resumes them. A lane is never paused for longer than ``max_pause_s`` at a
stretch and then runs for at least ``min_run_s`` (age-based elevation), so no
lane starves however busy the critical one is.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from silvertine_streams.events import EventPriority

DEFAULT_LANES: Mapping[str, EventPriority] = {
    "order": EventPriority.CRITICAL,
    "fill": EventPriority.CRITICAL,
    "signal": EventPriority.HIGH,
    "system": EventPriority.HIGH,
    "market_data": EventPriority.NORMAL,
}
"""The lane of each event type; ``SILVERTINE_LANES`` overrides entries."""


class LaneAction(enum.Enum):
    """What the engine should do with the lower lanes now."""

    NONE = "none"
    PAUSE = "pause"
    RESUME = "resume"


@dataclass(slots=True)
class LaneGate:
    """Decides when lower lanes pause for critical work and when they must run.

    Args:
        max_pause_s: longest stretch a lower lane stays paused.
        min_run_s: after a forced resume, how long the lane runs before it may
            pause again.
    """

    max_pause_s: float = 0.05
    min_run_s: float = 0.01
    paused_since: float | None = None
    forced_until: float = 0.0
    pauses: int = 0
    elevations: int = 0

    def decide(self, critical_waiting: bool, now: float) -> LaneAction:
        """Return the action for this moment.

        Args:
            critical_waiting: whether critical messages are queued or in flight.
            now: monotonic seconds.
        """
        if self.paused_since is not None:
            if now - self.paused_since >= self.max_pause_s:
                # Elevation: the paused lane has waited long enough.
                self.paused_since = None
                self.forced_until = now + self.min_run_s
                self.elevations += 1
                return LaneAction.RESUME
            if not critical_waiting:
                self.paused_since = None
                return LaneAction.RESUME
            return LaneAction.NONE
        if critical_waiting and now >= self.forced_until:
            self.paused_since = now
            self.pauses += 1
            return LaneAction.PAUSE
        return LaneAction.NONE
