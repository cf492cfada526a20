"""Plausibility of event timestamps against the (NTP-corrected) clock."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TimestampCheck:
    """Reject event timestamps too far in the future or before a floor.

    Attributes:
        future_tolerance_s: how far past ``now`` a timestamp may lie.
        floor: the earliest timestamp accepted; timezone-aware.
    """

    future_tolerance_s: float
    floor: datetime

    def __post_init__(self) -> None:
        if not (math.isfinite(self.future_tolerance_s) and self.future_tolerance_s >= 0):
            raise ValueError(f"future_tolerance_s must be >= 0, got {self.future_tolerance_s!r}")
        if self.floor.utcoffset() is None:
            raise ValueError("floor must be timezone-aware")

    def check(self, event_timestamp: datetime, now: float) -> str | None:
        """Say why ``event_timestamp`` is implausible, or return ``None`` if it is fine.

        Args:
            event_timestamp: the event's ``timestamp``.
            now: corrected wall time, seconds since the epoch
                (``clock.now_ns() / 1e9``).
        """
        if event_timestamp.utcoffset() is None:
            return f"timestamp {event_timestamp.isoformat()} has no timezone"
        if event_timestamp < self.floor:
            return (
                f"timestamp {event_timestamp.isoformat()} is before the earliest accepted "
                f"{self.floor.isoformat()}"
            )
        ahead_s = event_timestamp.timestamp() - now
        if ahead_s > self.future_tolerance_s:
            return (
                f"timestamp {event_timestamp.isoformat()} is {ahead_s:.3f} s in the future "
                f"(tolerance {self.future_tolerance_s:g} s)"
            )
        return None
