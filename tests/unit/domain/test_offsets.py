"""Offset continuity: a message that arrives before its predecessors is never processed."""

from __future__ import annotations

from silvertine_streams.domain.offsets import OffsetAction, OffsetGuard

P, S, H = OffsetAction.PROCESS, OffsetAction.SKIP, OffsetAction.HOLE


def run(guard: OffsetGuard, offsets: list[int]) -> list[OffsetAction]:
    return [guard.check(o) for o in offsets]


def test_contiguous_offsets_are_processed() -> None:
    assert run(OffsetGuard(10), [10, 11, 12]) == [P, P, P]


def test_unknown_start_takes_the_first_offset() -> None:
    guard = OffsetGuard(None)
    assert run(guard, [7, 8]) == [P, P]
    assert guard.next_offset == 9


def test_a_jump_is_reported_as_a_hole() -> None:
    guard = OffsetGuard(84)
    assert run(guard, [94, 95, 96]) == [H, H, H]
    assert guard.next_offset == 84 and guard.holes == 3
    # Should the missing offsets still come, processing continues from them.
    assert run(guard, [84, 85]) == [P, P]


def test_redelivered_offsets_are_skipped() -> None:
    guard = OffsetGuard(5)
    assert run(guard, [5, 6, 5, 6, 7]) == [P, P, S, S, P]
