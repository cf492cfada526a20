"""Model-based test of ReorderBuffer: shuffled, duplicated and dropped sequences.

Each stream has a plan of sequences. Rules send one of the lowest unsent ones
(a bounded shuffle), send a copy of something already sent, drop a sequence
(it may never come, or come much later as a straggler), advance the injected
clock and call ``expire``. The policy (mode, max_held, max_wait_s) is drawn
once per run. Every release is checked as it happens against what the model
knows had arrived; invariants check the accounting and the held state.

Items are unique ``(stream, sequence, copy)`` tuples, so "released exactly
once" is checked per copy, not per sequence.
"""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from silvertine_streams.domain.reorder import (
    HELD,
    GapReport,
    Released,
    ReleaseKind,
    ReorderBuffer,
    ReorderPolicy,
)
from silvertine_streams.domain.sequencing import SequenceTracker, stream_key

STREAMS = [stream_key("feed-a", "AAPL"), stream_key("feed-a", "MSFT"), stream_key("oms", "ES")]
stream_st = st.sampled_from(STREAMS)
PLAN = 30  # sequences per stream; few enough that every gap range stays remembered
SHUFFLE = 5  # a send picks among the lowest SHUFFLE unsent sequences

Item = tuple[str, int, int]  # (stream, sequence, copy number)


class ReorderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        # Plans start at different values: the first item of a stream fixes it.
        self.unsent = {s: list(range(10 * i, 10 * i + PLAN)) for i, s in enumerate(STREAMS)}
        self.dropped: dict[str, list[int]] = {s: [] for s in STREAMS}
        self.copies: dict[tuple[str, int], int] = {}  # copies sent per sequence
        self.arrived: dict[str, set[int]] = {s: set() for s in STREAMS}
        self.outstanding: set[Item] = set()  # offered, not yet returned
        self.returned: set[Item] = set()
        self.last: dict[str, int] = {}  # last IN_ORDER sequence released per stream
        self.in_order: dict[str, list[int]] = {s: [] for s in STREAMS}
        self.gaps: dict[str, list[GapReport]] = {s: [] for s in STREAMS}
        self.held_since: dict[tuple[str, int], float] = {}  # first copies held
        self.late = 0
        self.stale = 0

    @initialize(
        mode=st.sampled_from(["strict", "best_effort"]),
        max_held=st.integers(min_value=0, max_value=8),
        max_wait_s=st.sampled_from([0.0, 1.0, 5.0, math.inf]),
    )
    def start(self, mode: str, max_held: int, max_wait_s: float) -> None:
        self.policy = ReorderPolicy(mode, max_held, max_wait_s)  # type: ignore[arg-type]
        self.buffer: ReorderBuffer[Item] = ReorderBuffer(
            SequenceTracker(), self.policy, now=lambda: self.now
        )

    # ----------------------------------------------------------------- checking

    def _offer(self, stream: str, sequence: int) -> None:
        copy = self.copies.get((stream, sequence), 0)
        self.copies[stream, sequence] = copy + 1
        item = (stream, sequence, copy)
        last = self.last.get(stream)
        held_before = self.buffer.held_count
        overflows_before = self.buffer.overflows
        self.arrived[stream].add(sequence)
        self.outstanding.add(item)
        released = self.buffer.offer(stream, sequence, item)
        if last is not None and sequence <= last:
            # Below the next expected: returned at once, alone, LATE or STALE.
            assert len(released) == 1 and released[0][0] == item
        elif last is None or sequence == last + 1:
            # In order: released at once, first, and whatever it makes
            # contiguous follows without a gap (nothing is forced out).
            assert released[0] == (item, None)
            assert all(v is None or v.kind is ReleaseKind.STALE for _, v in released)
        elif held_before < self.policy.max_held:
            # Early, with room to hold it: nothing leaves, no gap is declared.
            assert released is HELD
        else:
            # Overflow: only the longest-held items (and what precedes them or
            # follows them contiguously) may be forced out past a gap.
            forced = self.buffer.overflows - overflows_before
            oldest = [*self.held_since, (stream, sequence)][:forced]
            self._check_gaps_justified(released, oldest)
        self._check_released(released)
        if item in self.outstanding:
            # Held (a copy of a held sequence keeps its first copy's time).
            assert last is not None and sequence > last + 1
            self.held_since.setdefault((stream, sequence), self.now)

    def _check_gaps_justified(self, released: Released[Item], due: list[tuple[str, int]]) -> None:
        """Check that each item released past a gap is at or below a due item of its stream."""
        for (stream, sequence, _), verdict in released:
            if verdict is not None and verdict.gap is not None:
                assert verdict.kind is ReleaseKind.IN_ORDER
                assert any(s == stream and q >= sequence for s, q in due), "gap not forced"

    def _check_released(self, released: Released[Item]) -> None:
        for item, verdict in released:
            assert item in self.outstanding, f"{item} returned twice or never offered"
            self.outstanding.remove(item)
            self.returned.add(item)
            stream, sequence, _ = item
            last = self.last.get(stream)
            if verdict is None or verdict.kind is ReleaseKind.IN_ORDER:
                assert last is None or sequence > last, "released out of order"
                if last is None or sequence == last + 1:
                    assert verdict is None
                else:
                    report = GapReport(stream, last + 1, sequence, self.policy.critical)
                    assert verdict is not None and verdict.gap == report
                    # Only sequences that never arrived may be declared missing.
                    assert not self.arrived[stream] & set(range(last + 1, sequence))
                    self.gaps[stream].append(report)
                self.last[stream] = sequence
                self.in_order[stream].append(sequence)
                self.held_since.pop((stream, sequence), None)
            else:
                assert last is not None and sequence <= last
                containing = [g for g in self.gaps[stream] if g.expected <= sequence < g.got]
                if verdict.kind is ReleaseKind.LATE:
                    assert containing == [verdict.gap]
                    self.late += 1
                else:
                    assert verdict.gap is None and not containing
                    self.stale += 1

    # ----------------------------------------------------------------- rules

    @rule(stream=stream_st, data=st.data())
    def send_next(self, stream: str, data: st.DataObject) -> None:
        unsent = self.unsent[stream]
        if not unsent:
            return
        index = data.draw(st.integers(min_value=0, max_value=min(SHUFFLE, len(unsent)) - 1))
        self._offer(stream, unsent.pop(index))

    @rule(stream=stream_st, data=st.data())
    def send_copy(self, stream: str, data: st.DataObject) -> None:
        if not self.arrived[stream]:
            return
        self._offer(stream, data.draw(st.sampled_from(sorted(self.arrived[stream]))))

    @rule(stream=stream_st)
    def drop(self, stream: str) -> None:
        if self.unsent[stream]:
            self.dropped[stream].append(self.unsent[stream].pop(0))

    @precondition(lambda self: any(self.dropped.values()))
    @rule(data=st.data())
    def straggler(self, data: st.DataObject) -> None:
        # A dropped sequence turns up after all: it fills its hole if still
        # held open, or is LATE once its gap was reported.
        stream = data.draw(st.sampled_from([s for s in STREAMS if self.dropped[s]]))
        dropped = self.dropped[stream]
        self._offer(stream, dropped.pop(data.draw(st.integers(0, len(dropped) - 1))))

    @rule(dt=st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.5, 10.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        wait = self.policy.max_wait_s
        due = {key for key, since in self.held_since.items() if since + wait <= self.now}
        released = self.buffer.expire()
        if not due:
            assert released == ()
        self._check_gaps_justified(released, sorted(due))
        self._check_released(released)
        # Everything due has left the buffer.
        assert not due & set(self.held_since)

    # ----------------------------------------------------------------- invariants

    @invariant()
    def every_offered_item_is_returned_once_or_still_held(self) -> None:
        pending = list(self.buffer.pending())
        assert {item for _, _, item in pending} == self.outstanding
        assert len(pending) == len(self.outstanding) == self.buffer.held_count
        assert {(s, q) for s, q, _ in pending} == set(self.held_since)
        for stream in STREAMS:
            assert self.buffer.held(stream) == sum(1 for s, _, _ in pending if s == stream)

    @invariant()
    def held_within_bounds(self) -> None:
        assert self.buffer.held_count <= self.policy.max_held

    @invariant()
    def nothing_held_that_could_be_released(self) -> None:
        for stream, sequence, _ in self.buffer.pending():
            # Every held item sits beyond a hole.
            assert sequence > self.last[stream] + 1
            assert self.last[stream] + 1 not in self.arrived[stream]

    @invariant()
    def releases_strictly_increasing_and_gaps_exact(self) -> None:
        for stream in STREAMS:
            released = self.in_order[stream]
            assert released == sorted(set(released))
            # Consecutive releases are either adjacent or separated by exactly
            # one gap report covering the whole range between them.
            expected_gaps = [
                (a + 1, b) for a, b in zip(released, released[1:], strict=False) if b > a + 1
            ]
            assert [(g.expected, g.got) for g in self.gaps[stream]] == expected_gaps
            assert self.buffer.tracker.high_water(stream) == self.last.get(stream)

    @invariant()
    def deadline_and_counters_agree(self) -> None:
        wait = self.policy.max_wait_s
        if not self.held_since or wait == math.inf:
            assert self.buffer.next_deadline() is None
        else:
            assert self.buffer.next_deadline() == min(self.held_since.values()) + wait
        reports = [g for gaps in self.gaps.values() for g in gaps]
        assert self.buffer.gaps == self.buffer.tracker.gaps == len(reports)
        assert self.buffer.missing == sum(g.missing for g in reports)
        assert (self.buffer.late, self.buffer.stale) == (self.late, self.stale)
        assert self.buffer.tracker.stale == self.late + self.stale


ReorderMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=80)
TestReorder = ReorderMachine.TestCase
