"""Properties of flow control: shed never loses or invents an event, and says why.

Events are small tuples with a unique position ``n``, so "kept ⊎ shed == input"
can be checked as multisets and as order. A state machine then compares
:class:`BoundedBuffer` (non-waiting calls) with a plain list model under every
policy.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from silvertine_streams.domain.flow import (
    OVERFLOW_POLICIES,
    SHED_REASONS,
    BoundedBuffer,
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


class BufferMachine(RuleBasedStateMachine):
    """BoundedBuffer against a list model, via the calls that never wait."""

    def __init__(self) -> None:
        super().__init__()
        self.model: list[Tick] = []
        self.shed: Counter[str] = Counter()
        self.taken: list[Tick] = []
        self.counter = 0

    @initialize(policy=policies, capacity=st.integers(1, 6))
    def create(self, policy: OverflowPolicy, capacity: int) -> None:
        self.buffer: BoundedBuffer[Tick] = BoundedBuffer(capacity, policy, key=key)
        self.policy = policy
        self.capacity = capacity

    @rule(stream=streams)
    def put(self, stream: tuple[str, str]) -> None:
        item = Tick(self.counter, *stream)
        self.counter += 1
        model, policy = self.model, self.policy
        expected: tuple[Tick, ...] | None  # None: the put would have to wait
        same = [i for i, queued in enumerate(model) if key(queued) == stream]
        if policy == "conflate" and same:
            expected = (model[same[0]],)
            model[same[0]] = item  # latest value, oldest position
        elif len(model) < self.capacity:
            expected = ()
            model.append(item)
        elif policy == "drop_oldest":
            expected = (model.pop(0),)
            model.append(item)
        elif policy == "drop_newest":
            expected = (item,)
        else:
            expected = None
        if expected is None:
            with pytest.raises(asyncio.QueueFull):
                self.buffer.put_nowait(item)
            return
        assert self.buffer.put_nowait(item) == expected
        if expected:
            self.shed[SHED_REASONS[policy]] += 1

    @rule()
    def get(self) -> None:
        if not self.model:
            with pytest.raises(asyncio.QueueEmpty):
                self.buffer.get_nowait()
            return
        got = self.buffer.get_nowait()
        assert got == self.model.pop(0)
        self.taken.append(got)

    @invariant()
    def matches_model(self) -> None:
        if hasattr(self, "buffer"):
            assert self.buffer.qsize() == len(self.model) <= self.capacity
            assert {r: n for r, n in self.buffer.shed_counts.items() if n} == dict(self.shed)
            if self.policy != "conflate":
                # FIFO: items leave in the order they came.
                assert is_increasing(self.taken)


BufferMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40)
test_buffer_matches_model = BufferMachine.TestCase
