"""Model-based test of SequenceTracker over random interleavings of several streams.

Each rule sends one kind of sequence (next in order, duplicate, regression,
skip ahead, a late arrival from inside a reported gap, an assigned one) to one
stream and checks the outcome against what that kind must produce. Invariants
compare the tracker with a plain model: high-water marks, pending changes, and
that every real gap was reported exactly once (counts and the exact
``(stream, expected, got)`` triples).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from silvertine_streams.domain.sequencing import (
    IN_ORDER,
    OutcomeKind,
    SequenceOutcome,
    SequenceTracker,
    stream_key,
)

STREAMS = [stream_key("feed-a", "AAPL"), stream_key("feed-a", "MSFT"), stream_key("engine", "")]
stream_st = st.sampled_from(STREAMS)


class SequencingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tracker = SequenceTracker()
        self.hwm: dict[str, int] = {}
        self.changed: dict[str, int] = {}
        # Every gap the model created, and every GAP the tracker reported.
        self.real_gaps: list[tuple[str, int, int]] = []
        self.reported_gaps: list[tuple[str, int, int]] = []
        self.missing: dict[str, set[int]] = {s: set() for s in STREAMS}
        self.stale = 0

    # ----------------------------------------------------------------- helpers

    def _observe(self, stream: str, seq: int) -> SequenceOutcome:
        outcome = self.tracker.observe(stream, seq)
        if outcome.kind is OutcomeKind.GAP:
            self.reported_gaps.append((outcome.stream, outcome.expected, outcome.got))
        return outcome

    def _accept(self, stream: str, seq: int) -> None:
        self.hwm[stream] = seq
        self.changed[stream] = seq

    def _expect_stale(self, stream: str, seq: int) -> None:
        hwm = self.hwm[stream]
        outcome = self._observe(stream, seq)
        assert outcome == SequenceOutcome(OutcomeKind.STALE, stream, hwm + 1, seq)
        assert outcome.is_duplicate is (seq == hwm)
        self.stale += 1

    # ----------------------------------------------------------------- rules

    @rule(stream=stream_st, start=st.integers(min_value=-5, max_value=10**12))
    def next_in_order(self, stream: str, start: int) -> None:
        # A new stream accepts whatever it starts with.
        seq = self.hwm[stream] + 1 if stream in self.hwm else start
        assert self._observe(stream, seq) is IN_ORDER
        self._accept(stream, seq)

    @rule(stream=stream_st)
    def duplicate(self, stream: str) -> None:
        if stream not in self.hwm:
            return
        self._expect_stale(stream, self.hwm[stream])

    @rule(stream=stream_st, back=st.integers(min_value=1, max_value=1000))
    def regression(self, stream: str, back: int) -> None:
        if stream not in self.hwm:
            return
        self._expect_stale(stream, self.hwm[stream] - back)

    @rule(stream=stream_st, skipped=st.integers(min_value=1, max_value=50))
    def skip_ahead(self, stream: str, skipped: int) -> None:
        if stream not in self.hwm:
            return
        expected = self.hwm[stream] + 1
        got = expected + skipped
        outcome = self._observe(stream, got)
        assert outcome == SequenceOutcome(OutcomeKind.GAP, stream, expected, got)
        assert outcome.missing == skipped
        self.real_gaps.append((stream, expected, got))
        self.missing[stream].update(range(expected, got))
        self._accept(stream, got)

    @precondition(lambda self: any(self.missing.values()))
    @rule(data=st.data())
    def late_arrival_from_a_gap(self, data: st.DataObject) -> None:
        # A sequence that was skipped shows up after all: it must not be
        # reported as a second gap, nor move the mark back.
        stream = data.draw(st.sampled_from([s for s in STREAMS if self.missing[s]]))
        seq = data.draw(st.sampled_from(sorted(self.missing[stream])))
        self._expect_stale(stream, seq)

    @rule(stream=stream_st)
    def assign(self, stream: str) -> None:
        seq = self.hwm.get(stream, 0) + 1
        assert self.tracker.assign(stream) == seq
        self._accept(stream, seq)

    @rule()
    def drain(self) -> None:
        assert self.tracker.drain_changes() == self.changed
        self.changed = {}

    @rule()
    def persist_and_restart(self) -> None:
        # What a worker does across a restart: write pending changes, come
        # back from the persisted marks. Counters belong to the old process.
        self.tracker.drain_changes()
        self.changed = {}
        marks = self.tracker.snapshot()
        gaps, missing, stale = self.tracker.gaps, self.tracker.missing, self.tracker.stale
        self.tracker = SequenceTracker(marks)
        self.tracker.gaps, self.tracker.missing, self.tracker.stale = gaps, missing, stale

    # ----------------------------------------------------------------- invariants

    @invariant()
    def marks_match_the_model(self) -> None:
        assert self.tracker.snapshot() == self.hwm
        for stream in STREAMS:
            assert self.tracker.high_water(stream) == self.hwm.get(stream)
            expected_next = self.hwm[stream] + 1 if stream in self.hwm else None
            assert self.tracker.next_expected(stream) == expected_next

    @invariant()
    def every_real_gap_reported_exactly_once(self) -> None:
        assert self.reported_gaps == self.real_gaps
        assert self.tracker.gaps == len(self.real_gaps)
        assert self.tracker.missing == sum(got - expected for _, expected, got in self.real_gaps)

    @invariant()
    def stale_counted(self) -> None:
        assert self.tracker.stale == self.stale


SequencingMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60)
TestSequencing = SequencingMachine.TestCase
