"""Per-stream reorder windows in front of a :class:`SequenceTracker`.

A :class:`ReorderBuffer` holds events that arrive early (a sequence beyond the
next expected one) until the hole before them fills, or until they have waited
``max_wait_s``, or until the buffer holds more than ``max_held`` items. It then
releases them in sequence order and declares every range it skipped as one
:class:`GapReport`. One buffer serves one event type on one partition, with
the policy of that type (:data:`DEFAULT_POLICIES`).

Contract with the engine:

* **Every offered item leaves exactly once, and only by being returned** from
  :meth:`ReorderBuffer.offer` or :meth:`ReorderBuffer.expire`, each paired with
  its :class:`Verdict` (``None`` for a plain in-order release). An ``offer``
  that returns :data:`HELD` (an empty tuple) kept the item: its Kafka message
  must not be committed until the item comes back. :meth:`ReorderBuffer.pending`
  lists what is held.
* **Release order is log order.** Within a stream, IN_ORDER releases have
  strictly increasing sequences; a STALE copy of a held sequence is released
  right after its first copy. Releases of different streams interleave.
* **The tracker sees exactly what is released, in release order**: the buffer
  calls ``tracker.observe`` once per released item (gaps advance the
  high-water mark past the skipped range), never for a held one. The tracker's
  marks therefore never include held items, and its ``gaps``/``stale`` counters
  agree with the buffer's. Drain and persist the tracker as before.
* **Timing.** An item waits at most ``max_wait_s`` from when it was held.
  Releases are in order, so an expiry also releases everything held below it:
  a hole is skipped ``max_wait_s`` after the first item above it arrived (the
  two readings of "when the wait started" give the same result). Call
  :meth:`ReorderBuffer.expire` at :meth:`ReorderBuffer.next_deadline`.
* **max_held bounds the whole buffer** (all streams of the partition, copies
  included), which is what bounds memory and unacknowledged messages. An
  ``offer`` that would exceed it releases the longest-waiting item early, as if
  its time were up, so an ``offer`` may return items of *other* streams.
* **Late arrivals.** A sequence below the next expected one is STALE (a
  duplicate, a redelivery or a regression: write it to the log, whose id index
  drops a redelivered copy) unless it falls in one of the last
  :data:`REMEMBERED_GAPS` ranges reported for its stream: then it is LATE, with
  the gap it belongs to. The engine dead-letters LATE items (``late: sequence N
  of <stream> arrived after its gap was reported``): nothing is lost and the
  log stays strictly increasing. Every copy of a late sequence is LATE again.
  Gap ranges live in memory only: after a restart, a late arrival for a gap
  reported before it is STALE.
* **Policies differ in numbers and severity only.** Both modes release in
  order, never drop and never reorder silently; a ``strict`` buffer's gap
  reports are ``critical``. ``max_wait_s=math.inf`` holds until ``max_held``
  overflows; ``max_held=0`` never holds (detect and report, as the bare
  tracker does).
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Final, Generic, Literal, NamedTuple, TypeAlias, TypeVar

from silvertine_streams.domain.sequencing import OutcomeKind, SequenceTracker

__all__ = [
    "DEFAULT_POLICIES",
    "HELD",
    "REMEMBERED_GAPS",
    "STALE",
    "GapReport",
    "ReleaseKind",
    "Released",
    "ReorderBuffer",
    "ReorderPolicy",
    "Verdict",
]

T = TypeVar("T")

REMEMBERED_GAPS: Final = 64
"""Reported gap ranges remembered per stream to recognise late arrivals."""


@dataclass(frozen=True, slots=True)
class ReorderPolicy:
    """How long and how much one event type may be held back.

    Attributes:
        mode: ``"strict"`` (gap reports are critical) or ``"best_effort"``.
        max_held: items one buffer (one partition) may hold at once, ``>= 0``.
        max_wait_s: seconds an item may be held, ``>= 0`` (``math.inf``: no
            time limit, only ``max_held``).
    """

    mode: Literal["strict", "best_effort"]
    max_held: int
    max_wait_s: float

    def __post_init__(self) -> None:
        """Reject a policy the buffer cannot run with."""
        if self.mode not in ("strict", "best_effort"):
            raise ValueError(f"mode must be 'strict' or 'best_effort', got {self.mode!r}")
        if self.max_held < 0:
            raise ValueError(f"max_held must be >= 0, got {self.max_held}")
        if not self.max_wait_s >= 0:  # also rejects NaN
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s}")

    @property
    def critical(self) -> bool:
        """Return whether this policy's gap reports are critical."""
        return self.mode == "strict"


_STRICT: Final = ReorderPolicy("strict", max_held=1000, max_wait_s=2.0)
_BEST_EFFORT: Final = ReorderPolicy("best_effort", max_held=100, max_wait_s=0.05)

DEFAULT_POLICIES: Final[dict[str, ReorderPolicy]] = {
    "market_data": _BEST_EFFORT,
    "order": _STRICT,
    "fill": _STRICT,
    "signal": _BEST_EFFORT,
    "system": _BEST_EFFORT,
}
"""The policy of each event type, keyed by its value (``EventType`` keys work too)."""


class GapReport(NamedTuple):
    """A range of sequences declared missing: ``expected .. got - 1``.

    Attributes:
        stream: the stream key.
        expected: the first missing sequence.
        got: the sequence released after the range (one past its end).
        critical: whether the policy is strict (the engine raises a
            critical ``system`` event, else a warning).
    """

    stream: str
    expected: int
    got: int
    critical: bool

    @property
    def missing(self) -> int:
        """Return how many sequences the range spans."""
        return self.got - self.expected


class ReleaseKind(enum.Enum):
    """Why an item left the buffer."""

    IN_ORDER = "in_order"
    """Next in sequence (a gap may precede it: :attr:`Verdict.gap`)."""
    LATE = "late"
    """Below the next expected, inside a range already reported as a gap."""
    STALE = "stale"
    """Below the next expected otherwise, or a copy of a held sequence."""


class Verdict(NamedTuple):
    """What the engine must know about one released item beyond "in order".

    Plain in-order releases carry ``None`` instead of a verdict.

    Attributes:
        kind: why the item left.
        gap: for IN_ORDER, the range skipped just before this item; for LATE,
            the reported range the item belongs to; ``None`` for STALE.
    """

    kind: ReleaseKind
    gap: GapReport | None = None


STALE: Final = Verdict(ReleaseKind.STALE)
"""The verdict of every stale item (shared)."""

Released: TypeAlias = Sequence[tuple[T, Verdict | None]]
"""Items leaving the buffer, in log order, each with its verdict or ``None``."""

HELD: Final[tuple[()]] = ()
"""What :meth:`ReorderBuffer.offer` returns when it released nothing (shared)."""

_new: Final = tuple.__new__  # skips NamedTuple.__new__'s keyword handling


class _Held(Generic[T]):
    """The held items of one stream."""

    __slots__ = ("heap", "items", "copies")

    def __init__(self) -> None:
        self.heap: list[int] = []
        self.items: dict[int, T] = {}
        # Further copies of a held sequence: released as STALE after the first.
        self.copies: dict[int, list[T]] | None = None


class ReorderBuffer(Generic[T]):
    """Hold early items per stream and release them in sequence order.

    Not thread-safe; one agent (one event loop) owns it, with its tracker.
    The tracker must not be observed by anyone else while the buffer is in use.

    Attributes:
        tracker: the high-water marks this buffer feeds.
        policy: the reorder policy.
        gaps: gap ranges declared.
        missing: sequences those ranges span.
        late: LATE releases.
        stale: STALE releases.
        held_total: items ever held.
        released_after_wait: held items released (hole filled or skipped).
        overflows: releases forced by ``max_held`` (each skips at least one hole).
    """

    __slots__ = (
        "tracker",
        "policy",
        "_now",
        "_next_expected",
        "_observe",
        "_held",
        "_held_count",
        "_arrivals",
        "_reported",
        "gaps",
        "missing",
        "late",
        "stale",
        "held_total",
        "released_after_wait",
        "overflows",
    )

    def __init__(
        self,
        tracker: SequenceTracker,
        policy: ReorderPolicy,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a buffer in front of ``tracker``.

        Args:
            tracker: the partition's tracker, already restored.
            policy: the event type's policy (:data:`DEFAULT_POLICIES`).
            now: a monotonic clock in seconds.
        """
        self.tracker = tracker
        self.policy = policy
        self._now = now
        self._next_expected = tracker.next_expected
        self._observe = tracker.observe
        self._held: dict[str, _Held[T]] = {}
        self._held_count = 0
        # (held at, stream, sequence) in arrival order, hence in deadline order
        # (one max_wait_s per buffer). Entries of items released since are
        # dropped lazily when they reach the head.
        self._arrivals: deque[tuple[float, str, int]] = deque()
        self._reported: dict[str, deque[GapReport]] = {}
        self.gaps = 0
        self.missing = 0
        self.late = 0
        self.stale = 0
        self.held_total = 0
        self.released_after_wait = 0
        self.overflows = 0

    # ----------------------------------------------------------------- offer

    def offer(self, stream: str, sequence: int, item: T) -> Released[T]:
        """Take ``item`` (sequence ``sequence`` of ``stream``); return what leaves now.

        Args:
            stream: the stream key.
            sequence: the item's sequence.
            item: what to hand back on release (an event, or an event with
                its Kafka offset).

        Returns:
            The released items in log order: ``((item, None),)`` when the item
            is in order and nothing on its stream was held; the item followed
            by held items that became contiguous; the item alone as LATE or
            STALE; :data:`HELD` when it was held; possibly items of other
            streams when holding it overflowed ``max_held``.
        """
        expected = self._next_expected(stream)
        if (expected is None or sequence == expected) and stream not in self._held:
            self._observe(stream, sequence)
            return ((item, None),)
        return self._offer_slow(stream, sequence, item, expected)

    def _offer_slow(self, stream: str, sequence: int, item: T, expected: int | None) -> Released[T]:
        """Handle every case but in order on a stream with nothing held."""
        held = self._held.get(stream)
        if expected is None or sequence == expected:
            # Fills the first hole of a stream that holds items.
            self._observe(stream, sequence)
            out: list[tuple[T, Verdict | None]] = [(item, None)]
            if held is not None:
                self._release(stream, held, sequence, out)
            return out
        if sequence < expected:
            return ((item, self._stale(stream, sequence)),)
        if held is None:
            held = self._held[stream] = _Held()
        if sequence in held.items:
            copies = held.copies
            if copies is None:
                copies = held.copies = {}
            copies.setdefault(sequence, []).append(item)
        else:
            held.items[sequence] = item
            heappush(held.heap, sequence)
            self._arrivals.append((self._now(), stream, sequence))
            if len(self._arrivals) > 2 * self._held_count + 64:
                self._compact_arrivals()
        self._held_count += 1
        self.held_total += 1
        if self._held_count > self.policy.max_held:
            return self._overflow()
        return HELD

    def _stale(self, stream: str, sequence: int) -> Verdict:
        """Classify a sequence below the next expected one as LATE or STALE."""
        self._observe(stream, sequence)  # STALE: counted by the tracker too
        reported = self._reported.get(stream)
        if reported is not None:
            for gap in reversed(reported):
                if gap.expected <= sequence < gap.got:
                    self.late += 1
                    return _new(Verdict, (ReleaseKind.LATE, gap))
        self.stale += 1
        return STALE

    # ----------------------------------------------------------------- release

    def _release(
        self, stream: str, held: _Held[T], through: int, out: list[tuple[T, Verdict | None]]
    ) -> None:
        """Release ``stream``'s held items up to ``through``, then the contiguous run.

        Every skipped range becomes one gap report, on the first item after it.
        """
        heap, items, copies = held.heap, held.items, held.copies
        observe = self._observe
        critical = self.policy.critical
        released = 0
        following = through + 1
        while heap:
            sequence = heap[0]
            if sequence > following:
                break
            heappop(heap)
            item = items.pop(sequence)
            outcome = observe(stream, sequence)
            if outcome.kind is OutcomeKind.GAP:
                gap = _new(GapReport, (stream, outcome.expected, sequence, critical))
                self._record_gap(gap)
                out.append((item, _new(Verdict, (ReleaseKind.IN_ORDER, gap))))
            else:
                out.append((item, None))
            released += 1
            if copies is not None and sequence in copies:
                for copy in copies.pop(sequence):
                    observe(stream, sequence)
                    self.stale += 1
                    out.append((copy, STALE))
                    released += 1
            following = max(following, sequence + 1)
        if not heap:
            del self._held[stream]
        self._held_count -= released
        self.released_after_wait += released

    def _record_gap(self, gap: GapReport) -> None:
        self.gaps += 1
        self.missing += gap.got - gap.expected
        reported = self._reported.get(gap.stream)
        if reported is None:
            reported = self._reported[gap.stream] = deque(maxlen=REMEMBERED_GAPS)
        reported.append(gap)

    def _head(self) -> tuple[float, str, int] | None:
        """Return the oldest arrival still held, dropping released ones before it."""
        arrivals = self._arrivals
        held_map = self._held
        while arrivals:
            head = arrivals[0]
            held = held_map.get(head[1])
            if held is not None and head[2] in held.items:
                return head
            arrivals.popleft()
        return None

    def _compact_arrivals(self) -> None:
        """Drop entries of released items (keeps the deque bounded by what is held)."""
        held_map = self._held
        self._arrivals = deque(
            entry
            for entry in self._arrivals
            if (held := held_map.get(entry[1])) is not None and entry[2] in held.items
        )

    def _overflow(self) -> Released[T]:
        """Release the longest-waiting items until the buffer is within max_held."""
        out: list[tuple[T, Verdict | None]] = []
        while self._held_count > self.policy.max_held:
            head = self._head()
            assert head is not None  # something is held, so its arrival is queued
            self._arrivals.popleft()
            _, stream, sequence = head
            self.overflows += 1
            self._release(stream, self._held[stream], sequence, out)
        return out

    # ----------------------------------------------------------------- timer

    def expire(self) -> Released[T]:
        """Release every item held for ``max_wait_s`` or longer, and what precedes it.

        Returns:
            The released items in log order (an empty tuple when none is due).
        """
        max_wait = self.policy.max_wait_s
        if not self._held or max_wait == math.inf:
            return ()
        now = self._now()
        out: list[tuple[T, Verdict | None]] = []
        while (head := self._head()) is not None and head[0] + max_wait <= now:
            self._arrivals.popleft()
            _, stream, sequence = head
            self._release(stream, self._held[stream], sequence, out)
        return out or ()

    def next_deadline(self) -> float | None:
        """Return when the longest-waiting item is due (on the ``now`` clock).

        Returns:
            The time at which :meth:`expire` releases something, or ``None``
            when nothing is held (or the policy has no time limit).
        """
        head = self._head()
        if head is None or self.policy.max_wait_s == math.inf:
            return None
        return head[0] + self.policy.max_wait_s

    # ----------------------------------------------------------------- inspection

    @property
    def held_count(self) -> int:
        """Return how many items are held, on all streams, copies included."""
        return self._held_count

    def held(self, stream: str) -> int:
        """Return how many items of ``stream`` are held, copies included."""
        held = self._held.get(stream)
        if held is None:
            return 0
        copies = sum(map(len, held.copies.values())) if held.copies else 0
        return len(held.items) + copies

    def pending(self) -> Iterator[tuple[str, int, T]]:
        """Yield ``(stream, sequence, item)`` of every held item, copies included.

        By stream, in sequence order within each; for diagnostics and for an
        engine that needs the oldest uncommitted message of a held item.
        """
        for stream, held in self._held.items():
            for sequence in sorted(held.items):
                yield stream, sequence, held.items[sequence]
                if held.copies and sequence in held.copies:
                    for copy in held.copies[sequence]:
                        yield stream, sequence, copy

    def reported_gaps(self, stream: str) -> tuple[GapReport, ...]:
        """Return the remembered gap reports of ``stream``, oldest first."""
        return tuple(self._reported.get(stream, ()))
