"""Properties of flow control: shed never loses or invents an event, and says why.

Events are small tuples with a unique position ``n``, so "kept ⊎ shed == input"
can be checked as multisets and as order.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from hypothesis import given
from hypothesis import strategies as st

from silvertine_streams.domain.flow import (
    OVERFLOW_POLICIES,
    SHED_REASONS,
    OverflowPolicy,
    OverloadDetector,
    ProducerThrottle,
    shed,
)


class Tick(NamedTuple):
    n: int
    source: str
    partition_key: str


def key(tick: Tick) -> tuple[str, str]:
    return tick.source, tick.partition_key


streams = st.tuples(st.sampled_from(["feed-a", "feed-b"]), st.sampled_from(["AAPL", "MSFT", "X"]))
batches = st.lists(streams, max_size=60).map(
    lambda pairs: [Tick(n, source, symbol) for n, (source, symbol) in enumerate(pairs)]
)
policies = st.sampled_from(OVERFLOW_POLICIES)
capacities = st.integers(min_value=0, max_value=70)


def is_increasing(ticks: list[Tick]) -> bool:
    return all(a.n < b.n for a, b in zip(ticks, ticks[1:], strict=False))


@given(batches, policies, capacities)
def test_kept_and_shed_partition_the_input_in_order(
    events: list[Tick], policy: OverflowPolicy, capacity: int
) -> None:
    kept, gone, reason = shed(events, policy, capacity)
    assert Counter(kept) + Counter(gone) == Counter(events)
    assert sorted(kept + gone) == events
    assert is_increasing(kept) and is_increasing(gone)
    assert (reason == "") == (not gone)
    if gone:
        assert reason == SHED_REASONS[policy]


@given(batches, capacities)
def test_block_never_sheds(events: list[Tick], capacity: int) -> None:
    assert shed(events, "block", capacity) == (events, [], "")


@given(batches, capacities)
def test_conflate_keeps_exactly_the_last_event_of_every_key(
    events: list[Tick], capacity: int
) -> None:
    kept, _, _ = shed(events, "conflate", capacity)
    last = {key(e): e for e in events}
    assert sorted(kept) == sorted(last.values())
    assert len({key(e) for e in kept}) == len(kept)


@given(batches, st.sampled_from(["drop_oldest", "drop_newest"]), capacities)
def test_drop_policies_keep_capacity_events_from_the_right_end(
    events: list[Tick], policy: OverflowPolicy, capacity: int
) -> None:
    kept, _, _ = shed(events, policy, capacity)
    assert len(kept) == min(len(events), capacity)
    if kept:
        assert kept == (events[-len(kept) :] if policy == "drop_oldest" else events[: len(kept)])


@given(st.lists(st.integers(min_value=0, max_value=200)), st.integers(0, 100), st.integers(0, 100))
def test_detector_changes_state_only_across_its_thresholds(lags: list[int], a: int, b: int) -> None:
    low, high = min(a, b), max(a, b)
    detector = OverloadDetector(high_lag=high, low_lag=low)
    was = False
    for lag in lags:
        now = detector.update(lag)
        if now and not was:
            assert lag > high  # entered
        elif was and not now:
            assert lag < low  # left
        elif now:
            assert lag >= low  # stayed overloaded
        else:
            assert lag <= high  # stayed normal
        was = now


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_throttle_is_monotone_and_bounded(lag: int, more: int, backlog: int) -> None:
    throttle = ProducerThrottle(max_lag=1000, max_backlog=500, min_wait_s=0.005, max_wait_s=2.0)
    wait = throttle.wait_s(lag, backlog)
    assert wait == 0.0 or 0.005 <= wait <= 2.0
    assert throttle.wait_s(lag + more, backlog) >= wait
    assert throttle.wait_s(lag, backlog + more) >= wait
