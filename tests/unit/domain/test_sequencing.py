"""Unit tests for silvertine_streams.domain.sequencing (pure, no event loop)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import pytest

from silvertine_streams.domain.sequencing import (
    IN_ORDER,
    OutcomeKind,
    SequenceOutcome,
    SequenceTracker,
    stream_key,
    stream_of,
)

AAPL = stream_key("feed-a", "AAPL")
MSFT = stream_key("feed-a", "MSFT")


@dataclass(frozen=True)
class FakeEvent:
    source: str
    symbol: str
    sequence: int | None = None


def test_stream_key_joins_source_and_symbol() -> None:
    assert stream_key("feed-a", "AAPL") == "feed-a/AAPL"
    assert stream_key("engine", "") == "engine/"


def test_stream_of_matches_stream_key() -> None:
    assert stream_of(FakeEvent("feed-a", "AAPL", 3)) == AAPL


def test_first_sequence_on_a_new_stream_is_in_order_whatever_its_value() -> None:
    tracker = SequenceTracker()
    assert tracker.observe(AAPL, 42) is IN_ORDER
    assert tracker.high_water(AAPL) == 42


def test_consecutive_sequences_are_in_order_and_share_the_constant() -> None:
    tracker = SequenceTracker()
    outcomes = [tracker.observe(AAPL, seq) for seq in range(1, 6)]
    assert all(outcome is IN_ORDER for outcome in outcomes)
    assert tracker.high_water(AAPL) == 5
    assert (tracker.gaps, tracker.stale) == (0, 0)


def test_gap_reports_expected_and_got_and_advances() -> None:
    tracker = SequenceTracker({AAPL: 3})
    outcome = tracker.observe(AAPL, 7)
    assert outcome == SequenceOutcome(OutcomeKind.GAP, AAPL, expected=4, got=7)
    assert outcome.missing == 3
    assert tracker.high_water(AAPL) == 7
    # Detect and report, don't hold: the next one after the gap is in order.
    assert tracker.observe(AAPL, 8) is IN_ORDER
    assert (tracker.gaps, tracker.missing) == (1, 3)


def test_a_late_event_from_inside_a_reported_gap_is_stale() -> None:
    tracker = SequenceTracker({AAPL: 3})
    tracker.observe(AAPL, 7)
    outcome = tracker.observe(AAPL, 5)
    assert outcome.kind is OutcomeKind.STALE
    assert tracker.high_water(AAPL) == 7


def test_duplicate_of_the_high_water_mark_is_stale_and_changes_nothing() -> None:
    tracker = SequenceTracker()
    tracker.observe(AAPL, 1)
    tracker.observe(AAPL, 2)
    tracker.drain_changes()
    outcome = tracker.observe(AAPL, 2)
    assert outcome == SequenceOutcome(OutcomeKind.STALE, AAPL, expected=3, got=2)
    assert outcome.is_duplicate
    assert outcome.missing == 0
    assert tracker.high_water(AAPL) == 2
    assert tracker.stale == 1
    assert tracker.drain_changes() == {}


def test_regression_is_stale_but_not_a_duplicate() -> None:
    tracker = SequenceTracker({AAPL: 10})
    outcome = tracker.observe(AAPL, 4)
    assert outcome.kind is OutcomeKind.STALE
    assert not outcome.is_duplicate
    assert (outcome.expected, outcome.got) == (11, 4)
    assert tracker.high_water(AAPL) == 10


def test_streams_are_independent() -> None:
    tracker = SequenceTracker()
    tracker.observe(AAPL, 1)
    tracker.observe(MSFT, 100)
    assert tracker.observe(AAPL, 2) is IN_ORDER
    assert tracker.observe(MSFT, 101) is IN_ORDER
    assert tracker.observe(AAPL, 4).kind is OutcomeKind.GAP
    assert tracker.high_water(MSFT) == 101


def test_in_order_constant_carries_no_stream_data() -> None:
    assert IN_ORDER.kind is OutcomeKind.IN_ORDER
    assert (IN_ORDER.stream, IN_ORDER.missing, IN_ORDER.is_duplicate) == ("", 0, False)


def test_assign_numbers_from_one_and_continues_from_the_mark() -> None:
    tracker = SequenceTracker()
    assert [tracker.assign(AAPL) for _ in range(3)] == [1, 2, 3]
    tracker.observe(MSFT, 41)
    assert tracker.assign(MSFT) == 42
    assert tracker.observe(AAPL, 4) is IN_ORDER
    assert tracker.observe(AAPL, 3).kind is OutcomeKind.STALE


def test_drain_changes_returns_only_moved_streams_once() -> None:
    tracker = SequenceTracker({AAPL: 1, MSFT: 1})
    assert tracker.drain_changes() == {}  # the constructor's marks count as persisted
    tracker.observe(AAPL, 2)
    tracker.observe(AAPL, 3)
    tracker.assign("feed-b/IBM")
    assert tracker.drain_changes() == {AAPL: 3, "feed-b/IBM": 1}
    assert tracker.drain_changes() == {}
    tracker.observe(MSFT, 9)  # a gap moves the mark too
    assert tracker.drain_changes() == {MSFT: 9}


def test_drained_dict_is_the_callers_to_keep() -> None:
    tracker = SequenceTracker()
    tracker.observe(AAPL, 1)
    drained = tracker.drain_changes()
    tracker.observe(AAPL, 2)
    assert drained == {AAPL: 1}
    assert tracker.drain_changes() == {AAPL: 2}
    nothing = tracker.drain_changes()
    nothing["x/y"] = 5
    assert tracker.drain_changes() == {}


def test_snapshot_is_a_copy_and_keeps_pending_changes() -> None:
    tracker = SequenceTracker()
    tracker.observe(AAPL, 5)
    snap = tracker.snapshot()
    snap[AAPL] = 99
    assert tracker.high_water(AAPL) == 5
    assert tracker.drain_changes() == {AAPL: 5}


def test_restore_replaces_marks_and_forgets_pending_changes() -> None:
    tracker = SequenceTracker()
    tracker.observe(MSFT, 3)
    tracker.restore({AAPL: 10})
    assert tracker.drain_changes() == {}
    assert MSFT not in tracker
    assert len(tracker) == 1
    assert tracker.observe(AAPL, 11) is IN_ORDER
    assert tracker.observe(AAPL, 11).kind is OutcomeKind.STALE


def test_restore_round_trips_a_snapshot() -> None:
    original = SequenceTracker()
    for seq in (1, 2, 5):
        original.observe(AAPL, seq)
    original.observe(MSFT, 7)
    copy = SequenceTracker()
    copy.restore(original.snapshot())
    assert copy.snapshot() == {AAPL: 5, MSFT: 7}
    assert copy.observe(AAPL, 6) is IN_ORDER


def test_next_expected_does_not_observe() -> None:
    tracker = SequenceTracker()
    assert tracker.next_expected(AAPL) is None
    tracker.observe(AAPL, 4)
    assert tracker.next_expected(AAPL) == 5
    assert tracker.next_expected(AAPL) == 5
    assert tracker.drain_changes() == {AAPL: 4}


def test_a_reorder_layer_can_sit_in_front_of_the_tracker() -> None:
    """The follow-up's shape: hold early events, feed the tracker in order.

    A per-stream buffer only needs ``next_expected`` to decide and ``observe``
    to accept, so the tracker itself does not change when reordering comes.
    """
    tracker = SequenceTracker({AAPL: 0})
    held: list[int] = []
    released: list[int] = []
    outcomes = []
    for seq in (1, 3, 4, 2, 5):
        heapq.heappush(held, seq)
        while held and held[0] == tracker.next_expected(AAPL):
            nxt = heapq.heappop(held)
            outcomes.append(tracker.observe(AAPL, nxt))
            released.append(nxt)
    assert released == [1, 2, 3, 4, 5]
    assert all(outcome is IN_ORDER for outcome in outcomes)
    assert tracker.gaps == 0


@pytest.mark.parametrize(
    ("marks", "seq", "kind"),
    [
        ({}, 1, OutcomeKind.IN_ORDER),
        ({AAPL: 1}, 2, OutcomeKind.IN_ORDER),
        ({AAPL: 1}, 3, OutcomeKind.GAP),
        ({AAPL: 1}, 1, OutcomeKind.STALE),
        ({AAPL: 1}, 0, OutcomeKind.STALE),
        ({AAPL: 1}, -5, OutcomeKind.STALE),
    ],
)
def test_classification_table(marks: dict[str, int], seq: int, kind: OutcomeKind) -> None:
    assert SequenceTracker(marks).observe(AAPL, seq).kind is kind
