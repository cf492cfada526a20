"""Offset continuity: skipped messages are re-read, never silently passed over."""

from __future__ import annotations

from silvertine_streams.domain.offsets import OffsetAction, OffsetGuard

P, S, K = OffsetAction.PROCESS, OffsetAction.SKIP, OffsetAction.SEEK


def run(guard: OffsetGuard, offsets: list[int]) -> list[OffsetAction]:
    return [guard.check(o) for o in offsets]


def test_contiguous_offsets_are_processed() -> None:
    assert run(OffsetGuard(10), [10, 11, 12]) == [P, P, P]


def test_unknown_start_takes_the_first_offset() -> None:
    guard = OffsetGuard(None)
    assert run(guard, [7, 8]) == [P, P]
    assert guard.next_offset == 9


def test_a_jump_seeks_back_skips_what_is_ahead_and_resumes_at_the_target() -> None:
    guard = OffsetGuard(84)
    # 94..96 arrive first (prefetched); then the re-read from 84.
    assert run(guard, [94, 95, 96]) == [K, S, S]
    assert guard.next_offset == 84 and guard.seeking
    assert run(guard, [84, 85]) == [P, P]
    assert not guard.seeking
    assert run(guard, [86, 94, 95]) == [P, K, S]  # the gap 87..93 is sought again


def test_redelivered_offsets_are_skipped() -> None:
    guard = OffsetGuard(5)
    assert run(guard, [5, 6, 5, 6, 7]) == [P, P, S, S, P]


def test_a_real_hole_in_the_offsets_is_accepted_after_one_seek() -> None:
    guard = OffsetGuard(10)
    assert run(guard, [12, 13]) == [K, S]
    # The re-read starts at 12 again (there is no 10 or 11): accept, move on.
    assert run(guard, [12, 13, 14]) == [P, P, P]
    assert guard.seeks == 1
