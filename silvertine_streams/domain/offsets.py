"""Per-partition offset continuity: notice messages the consumer never delivered (pure).

Our topics are neither compacted nor transactional, so a partition's offsets
arrive contiguously. Faust, however, can deliver a later offset first after a
rebalance or restart (records fetched before its seek to the committed
offsets), and would turn the jump into a "gap" it commits past: the skipped
messages would be lost. The engine refuses such commits (see ``app.py``); this
guard tells the agent when a jump happened, and the worker then restarts its
consumer, which reads again from the committed offset (the hole's start).

Re-reading in place with ``seek`` proved unreliable inside Faust: its fetch
loop drops records below a read position that messages still in flight keep
pushing up.
"""

from __future__ import annotations

import enum


class OffsetAction(enum.Enum):
    """What to do with a message."""

    PROCESS = "process"
    SKIP = "skip"
    """Already processed (a redelivery): acknowledge, do not process."""
    HOLE = "hole"
    """Offsets before this one were never delivered: do not process; restart the consumer."""


class OffsetGuard:
    """Tracks the next expected offset of one partition.

    Args:
        next_offset: the first offset expected (the group's committed offset), or
            None when unknown (then the first message sets it).
    """

    __slots__ = ("next_offset", "holes")

    def __init__(self, next_offset: int | None) -> None:
        self.next_offset = next_offset
        self.holes = 0

    def check(self, offset: int) -> OffsetAction:
        """Classify the message at ``offset``."""
        expected = self.next_offset
        if expected is None or offset == expected:
            self.next_offset = offset + 1
            return OffsetAction.PROCESS
        if offset < expected:
            return OffsetAction.SKIP
        self.holes += 1
        return OffsetAction.HOLE
