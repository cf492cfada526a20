"""Per-partition offset continuity: notice messages the consumer never delivered (pure).

Our topics are neither compacted nor transactional, so a partition's offsets
arrive contiguously. Faust, however, can deliver a later offset first after a
rebalance or restart (records fetched before its seek to the committed
offsets, or dropped from the agents' buffers by its recovery: see ``app.py``,
``_FlowControl``), and would turn the jump into a "gap" it commits past: the skipped
messages would be lost. The engine refuses such commits (see ``app.py``), so
a hole holds the partition's commit back and the messages in it are read again
after the next restart; this guard tells the agent when a jump happened (it is
counted and logged) and when a message is a redelivery of one already processed.

Neither re-reading in place with ``seek`` (Faust's fetch loop drops records
below a read position that in-flight messages keep pushing up) nor restarting
the consumer (on Tansu the restarted consumer jumped again, every time) closed
holes reliably in our fault tests.
"""

from __future__ import annotations

import enum


class OffsetAction(enum.Enum):
    """What to do with a message."""

    PROCESS = "process"
    SKIP = "skip"
    """Already processed (a redelivery): acknowledge, do not process."""
    HOLE = "hole"
    """Offsets before this one were not delivered (yet)."""


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
