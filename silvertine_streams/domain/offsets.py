"""Per-partition offset continuity: notice messages the consumer never delivered (pure).

Our topics are neither compacted nor transactional, so a partition's offsets
arrive contiguously. Faust, however, can deliver a later offset first after a
rebalance or restart (records prefetched before the group's seek), and turns
the jump into a "gap" it may commit past — the skipped messages are then lost.
The engine refuses such commits (see ``app.py``) and uses this guard to get the
skipped messages back: on a jump it seeks to the first missing offset and skips
what arrives ahead of it until the re-read reaches that offset.

If the re-read itself starts beyond the target, the broker has no records there
(a real hole in the offsets): the guard accepts it rather than looping.
"""

from __future__ import annotations

import enum


class OffsetAction(enum.Enum):
    """What to do with a message."""

    PROCESS = "process"
    SKIP = "skip"
    """Already processed, or ahead of a re-read in progress: acknowledge, do not process."""
    SEEK = "seek"
    """Offsets were skipped: seek to :attr:`OffsetGuard.next_offset`, skip this message."""


class OffsetGuard:
    """Tracks the next expected offset of one partition.

    Args:
        next_offset: the first offset expected (the group's committed offset), or
            None when unknown (then the first message sets it).
    """

    __slots__ = ("next_offset", "seeking", "_ahead", "seeks")

    def __init__(self, next_offset: int | None) -> None:
        self.next_offset = next_offset
        self.seeking = False
        self._ahead = -1  # highest offset skipped while seeking
        self.seeks = 0

    def check(self, offset: int) -> OffsetAction:
        """Classify the message at ``offset``."""
        expected = self.next_offset
        if expected is None or offset == expected:
            self._accept(offset)
            return OffsetAction.PROCESS
        if offset < expected:
            return OffsetAction.SKIP
        if not self.seeking:
            self.seeking = True
            self._ahead = offset
            self.seeks += 1
            return OffsetAction.SEEK
        if offset > self._ahead:
            self._ahead = offset  # still the messages fetched before the seek
            return OffsetAction.SKIP
        # The re-read restarted beyond the target: no records exist there.
        self._accept(offset)
        return OffsetAction.PROCESS

    def _accept(self, offset: int) -> None:
        self.next_offset = offset + 1
        self.seeking = False
        self._ahead = -1
