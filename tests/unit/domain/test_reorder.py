"""Unit tests for silvertine_streams.domain.reorder (pure, injected clock)."""

from __future__ import annotations

import math

import pytest

from silvertine_streams.domain.reorder import (
    DEFAULT_POLICIES,
    HELD,
    REMEMBERED_GAPS,
    STALE,
    GapReport,
    Released,
    ReleaseKind,
    ReorderBuffer,
    ReorderPolicy,
    Verdict,
)
from silvertine_streams.domain.sequencing import SequenceTracker, stream_key

AAPL = stream_key("feed-a", "AAPL")
MSFT = stream_key("feed-a", "MSFT")

BEST_EFFORT = ReorderPolicy("best_effort", max_held=100, max_wait_s=1.0)
STRICT = ReorderPolicy("strict", max_held=100, max_wait_s=1.0)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(
    policy: ReorderPolicy = BEST_EFFORT, marks: dict[str, int] | None = None
) -> tuple[ReorderBuffer[str], Clock]:
    clock = Clock()
    return ReorderBuffer(SequenceTracker(marks), policy, now=clock), clock


def seqs(released: Released[str]) -> list[str]:
    return [item for item, _ in released]


def offer(buffer: ReorderBuffer[str], stream: str, sequence: int) -> Released[str]:
    """Offer an item named after its sequence (``"a5"`` for 5 of AAPL)."""
    return buffer.offer(stream, sequence, f"{stream[7].lower()}{sequence}")


def gap(stream: str, expected: int, got: int, critical: bool = False) -> Verdict:
    return Verdict(ReleaseKind.IN_ORDER, GapReport(stream, expected, got, critical))


# --------------------------------------------------------------------- policies


def test_default_policies_cover_every_event_type() -> None:
    assert set(DEFAULT_POLICIES) == {"market_data", "order", "fill", "signal", "system"}
    assert DEFAULT_POLICIES["order"].mode == "strict"
    assert DEFAULT_POLICIES["fill"].critical
    assert DEFAULT_POLICIES["market_data"] == ReorderPolicy("best_effort", 100, 0.05)
    assert DEFAULT_POLICIES["order"] == ReorderPolicy("strict", 1000, 2.0)
    assert not DEFAULT_POLICIES["signal"].critical
    assert not DEFAULT_POLICIES["system"].critical


@pytest.mark.parametrize(
    ("mode", "max_held", "max_wait_s"),
    [("lenient", 1, 1.0), ("strict", -1, 1.0), ("strict", 1, -0.1), ("strict", 1, math.nan)],
)
def test_a_policy_the_buffer_cannot_run_with_is_rejected(
    mode: str, max_held: int, max_wait_s: float
) -> None:
    with pytest.raises(ValueError):
        ReorderPolicy(mode, max_held, max_wait_s)  # type: ignore[arg-type]  # bad mode on purpose


# --------------------------------------------------------------------- in order


def test_in_order_items_pass_straight_through() -> None:
    buffer, _ = make()
    for sequence in range(1, 6):
        assert offer(buffer, AAPL, sequence) == ((f"a{sequence}", None),)
    assert buffer.tracker.high_water(AAPL) == 5
    assert buffer.held_count == 0
    assert buffer.next_deadline() is None
    assert (buffer.gaps, buffer.stale, buffer.late, buffer.held_total) == (0, 0, 0, 0)


def test_the_first_item_of_a_new_stream_passes_whatever_its_sequence() -> None:
    buffer, _ = make()
    assert offer(buffer, AAPL, 42) == (("a42", None),)


def test_a_restored_mark_decides_what_is_in_order() -> None:
    buffer, _ = make(marks={AAPL: 9})
    assert offer(buffer, AAPL, 12) is HELD
    assert seqs(offer(buffer, AAPL, 10)) == ["a10"]
    assert buffer.held(AAPL) == 1


# --------------------------------------------------------------------- hold and fill


def test_an_early_item_is_held_and_released_in_order_when_the_hole_fills() -> None:
    buffer, _ = make()
    offer(buffer, AAPL, 1)
    assert offer(buffer, AAPL, 4) is HELD
    assert offer(buffer, AAPL, 3) is HELD
    assert buffer.held(AAPL) == 2
    assert buffer.held_count == 2
    released = offer(buffer, AAPL, 2)
    assert released == [("a2", None), ("a3", None), ("a4", None)]
    assert buffer.held_count == 0
    assert buffer.tracker.high_water(AAPL) == 4
    assert (buffer.gaps, buffer.released_after_wait, buffer.held_total) == (0, 2, 2)
    assert buffer.next_deadline() is None
    # Back on the fast path (its shared tuple shape, not the slow path's list).
    assert offer(buffer, AAPL, 5) == (("a5", None),)


def test_filling_one_hole_releases_only_up_to_the_next_hole() -> None:
    buffer, _ = make()
    offer(buffer, AAPL, 1)
    for sequence in (3, 5, 6):
        offer(buffer, AAPL, sequence)
    assert seqs(offer(buffer, AAPL, 2)) == ["a2", "a3"]
    assert buffer.held(AAPL) == 2
    assert seqs(offer(buffer, AAPL, 4)) == ["a4", "a5", "a6"]
    assert buffer.held(AAPL) == 0


def test_the_tracker_sees_only_released_items() -> None:
    buffer, _ = make()
    offer(buffer, AAPL, 1)
    buffer.tracker.drain_changes()
    offer(buffer, AAPL, 3)
    assert buffer.tracker.high_water(AAPL) == 1
    assert buffer.tracker.drain_changes() == {}


# --------------------------------------------------------------------- stale


def test_a_duplicate_and_a_regression_are_stale_and_returned_at_once() -> None:
    buffer, _ = make()
    for sequence in (1, 2, 3):
        offer(buffer, AAPL, sequence)
    assert offer(buffer, AAPL, 3) == (("a3", STALE),)
    assert offer(buffer, AAPL, 1) == (("a1", STALE),)
    assert buffer.stale == 2
    assert buffer.tracker.stale == 2
    assert buffer.tracker.high_water(AAPL) == 3


def test_a_copy_of_a_held_sequence_waits_and_follows_its_first_copy() -> None:
    # Writing the copy at once would put sequence 3 in the log before 2.
    buffer, _ = make()
    offer(buffer, AAPL, 1)
    assert offer(buffer, AAPL, 3) is HELD
    assert buffer.offer(AAPL, 3, "a3-copy") is HELD
    assert buffer.held(AAPL) == 2
    assert buffer.held_count == 2
    assert list(buffer.pending()) == [(AAPL, 3, "a3"), (AAPL, 3, "a3-copy")]
    assert offer(buffer, AAPL, 2) == [("a2", None), ("a3", None), ("a3-copy", STALE)]
    assert buffer.held_count == 0
    assert buffer.stale == 1


# --------------------------------------------------------------------- expiry


def test_expiry_skips_each_missing_range_with_exactly_one_gap_report() -> None:
    buffer, clock = make()
    offer(buffer, AAPL, 1)
    for sequence in (5, 3, 6, 9):  # missing: 2, 4, 7..8
        assert offer(buffer, AAPL, sequence) is HELD
    clock.t += 0.999
    assert buffer.expire() == ()
    clock.t += 0.001
    assert buffer.expire() == [
        ("a3", gap(AAPL, 2, 3)),
        ("a5", gap(AAPL, 4, 5)),
        ("a6", None),
        ("a9", gap(AAPL, 7, 9)),
    ]
    assert (buffer.gaps, buffer.missing) == (3, 4)
    assert (buffer.tracker.gaps, buffer.tracker.missing) == (3, 4)
    assert buffer.tracker.high_water(AAPL) == 9
    assert buffer.held_count == 0
    assert buffer.expire() == ()
    assert buffer.reported_gaps(AAPL) == (
        GapReport(AAPL, 2, 3, False),
        GapReport(AAPL, 4, 5, False),
        GapReport(AAPL, 7, 9, False),
    )


def test_expiry_releases_what_is_due_and_keeps_what_is_not() -> None:
    buffer, clock = make()
    offer(buffer, AAPL, 1)
    offer(buffer, AAPL, 3)  # held at t
    clock.t += 0.5
    offer(buffer, AAPL, 6)  # held at t + 0.5
    offer(buffer, AAPL, 4)  # contiguous with 3: released with it
    clock.t += 0.5
    assert buffer.expire() == [("a3", gap(AAPL, 2, 3)), ("a4", None)]
    assert buffer.held(AAPL) == 1
    assert buffer.next_deadline() == pytest.approx(clock.t + 0.5)
    clock.t += 0.5
    assert buffer.expire() == [("a6", gap(AAPL, 5, 6))]


def test_an_item_arriving_after_expiry_in_the_skipped_range_is_late() -> None:
    buffer, clock = make()
    offer(buffer, AAPL, 1)
    offer(buffer, AAPL, 5)
    clock.t += 1.0
    buffer.expire()
    late = Verdict(ReleaseKind.LATE, GapReport(AAPL, 2, 5, False))
    for sequence in (3, 3, 2, 4):  # every copy of a late sequence is late
        assert offer(buffer, AAPL, sequence) == ((f"a{sequence}", late),)
    assert offer(buffer, AAPL, 5) == (("a5", STALE),)
    assert offer(buffer, AAPL, 1) == (("a1", STALE),)
    assert (buffer.late, buffer.stale) == (4, 2)
    assert buffer.tracker.stale == 6  # the tracker counts both kinds as stale
    assert buffer.tracker.high_water(AAPL) == 5


def test_only_the_most_recent_gap_ranges_are_remembered() -> None:
    buffer, _ = make(ReorderPolicy("best_effort", max_held=0, max_wait_s=1.0))
    offer(buffer, AAPL, 0)
    for index in range(REMEMBERED_GAPS + 1):
        offer(buffer, AAPL, 2 * index + 2)  # each skips 2 * index + 1
    assert buffer.gaps == REMEMBERED_GAPS + 1
    assert len(buffer.reported_gaps(AAPL)) == REMEMBERED_GAPS
    assert offer(buffer, AAPL, 1)[0][1] is STALE  # the oldest range is forgotten
    assert offer(buffer, AAPL, 3)[0][1] == Verdict(ReleaseKind.LATE, GapReport(AAPL, 3, 4, False))


def test_next_deadline_is_the_earliest_hold_plus_the_window() -> None:
    buffer, clock = make()
    offer(buffer, AAPL, 1)
    offer(buffer, MSFT, 1)
    assert buffer.next_deadline() is None
    start = clock.t
    offer(buffer, AAPL, 3)
    clock.t += 0.25
    offer(buffer, MSFT, 3)
    assert buffer.next_deadline() == start + 1.0
    offer(buffer, AAPL, 2)  # fills AAPL's hole: MSFT's item is now the oldest
    assert buffer.next_deadline() == start + 1.25
    clock.t = start + 1.25
    assert seqs(buffer.expire()) == ["m3"]
    assert buffer.next_deadline() is None


def test_without_a_time_limit_only_max_held_releases() -> None:
    buffer, clock = make(ReorderPolicy("strict", max_held=1, max_wait_s=math.inf))
    offer(buffer, AAPL, 1)
    offer(buffer, AAPL, 3)
    clock.t += 1e9
    assert buffer.next_deadline() is None
    assert buffer.expire() == ()
    assert offer(buffer, AAPL, 5) == [("a3", gap(AAPL, 2, 3, critical=True))]


# --------------------------------------------------------------------- max_held


def test_overflow_releases_the_longest_waiting_item_of_any_stream() -> None:
    buffer, clock = make(ReorderPolicy("best_effort", max_held=2, max_wait_s=1.0))
    offer(buffer, AAPL, 1)
    offer(buffer, MSFT, 1)
    offer(buffer, AAPL, 4)
    clock.t += 0.1
    offer(buffer, MSFT, 3)
    assert buffer.held_count == 2
    # A third held item overflows: AAPL's 4 waited longest and goes first.
    assert offer(buffer, MSFT, 5) == [("a4", gap(AAPL, 2, 4))]
    assert buffer.held_count == 2
    assert buffer.overflows == 1
    assert sorted((s, q) for s, q, _ in buffer.pending()) == [(MSFT, 3), (MSFT, 5)]
    assert buffer.next_deadline() == pytest.approx(clock.t + 1.0)


def test_overflow_on_the_same_stream_releases_in_order_up_to_the_oldest() -> None:
    buffer, _ = make(ReorderPolicy("best_effort", max_held=2, max_wait_s=1.0))
    offer(buffer, AAPL, 1)
    offer(buffer, AAPL, 6)  # oldest
    offer(buffer, AAPL, 3)
    assert offer(buffer, AAPL, 4) == [
        ("a3", gap(AAPL, 2, 3)),
        ("a4", None),
        ("a6", gap(AAPL, 5, 6)),
    ]
    assert buffer.held_count == 0


def test_max_held_zero_never_holds() -> None:
    buffer, _ = make(ReorderPolicy("best_effort", max_held=0, max_wait_s=1.0))
    offer(buffer, AAPL, 1)
    assert offer(buffer, AAPL, 4) == [("a4", gap(AAPL, 2, 4))]
    assert offer(buffer, AAPL, 5) == (("a5", None),)


def test_released_items_of_other_streams_do_not_disturb_bookkeeping() -> None:
    # Many holds filled at once must not let the arrival queue grow unbounded.
    buffer, _ = make()
    offer(buffer, AAPL, 0)
    offer(buffer, MSFT, 0)
    offer(buffer, MSFT, 2)  # stays held throughout
    for sequence in range(1, 2001, 2):
        offer(buffer, AAPL, sequence + 1)
        offer(buffer, AAPL, sequence)
    assert buffer.held_count == 1
    assert len(buffer._arrivals) < 200
    assert buffer.next_deadline() is not None


# --------------------------------------------------------------------- severity and streams


@pytest.mark.parametrize(("policy", "critical"), [(STRICT, True), (BEST_EFFORT, False)])
def test_gap_severity_follows_the_mode(policy: ReorderPolicy, critical: bool) -> None:
    buffer, clock = make(policy)
    offer(buffer, AAPL, 1)
    offer(buffer, AAPL, 3)
    clock.t += 1.0
    ((item, verdict),) = buffer.expire()
    assert verdict == gap(AAPL, 2, 3, critical)
    assert verdict.gap is not None and verdict.gap.critical is critical
    assert verdict.gap.missing == 1


def test_streams_are_independent() -> None:
    buffer, clock = make()
    offer(buffer, AAPL, 1)
    offer(buffer, MSFT, 10)
    assert offer(buffer, AAPL, 3) is HELD
    # MSFT flows while AAPL holds.
    assert offer(buffer, MSFT, 11) == (("m11", None),)
    assert offer(buffer, MSFT, 13) is HELD
    assert seqs(offer(buffer, MSFT, 12)) == ["m12", "m13"]
    assert buffer.held(AAPL) == 1
    assert buffer.held(MSFT) == 0
    clock.t += 1.0
    assert buffer.expire() == [("a3", gap(AAPL, 2, 3))]
    assert buffer.reported_gaps(MSFT) == ()
    assert offer(buffer, MSFT, 9) == (("m9", STALE),)  # AAPL's gap is not MSFT's
