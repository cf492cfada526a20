"""Unit tests for silvertine_streams.domain.circuit (pure, fake clock)."""

from __future__ import annotations

import pytest

from silvertine_streams.domain.circuit import CircuitBreaker, CircuitState

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def transitions() -> list[tuple[CircuitState, CircuitState]]:
    return []


@pytest.fixture
def breaker(
    clock: FakeClock, transitions: list[tuple[CircuitState, CircuitState]]
) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3,
        reset_s=10.0,
        now=clock,
        on_transition=lambda old, new: transitions.append((old, new)),
    )


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_starts_closed_and_allows(breaker: CircuitBreaker) -> None:
    assert breaker.state is CLOSED
    assert breaker.allow()


def test_opens_after_threshold_consecutive_failures(
    breaker: CircuitBreaker, transitions: list[tuple[CircuitState, CircuitState]]
) -> None:
    fail(breaker, 2)
    assert breaker.state is CLOSED
    assert transitions == []
    fail(breaker, 1)
    assert breaker.state is OPEN
    assert transitions == [(CLOSED, OPEN)]
    assert (breaker.failures_total, breaker.opened_total) == (3, 1)


def test_success_resets_the_consecutive_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    fail(breaker, 2)
    assert breaker.state is CLOSED
    assert breaker.failures_total == 4


def test_open_rejects_until_reset_then_allows_one_trial(
    breaker: CircuitBreaker,
    clock: FakeClock,
    transitions: list[tuple[CircuitState, CircuitState]],
) -> None:
    fail(breaker, 3)
    clock.advance(9.999)
    assert not breaker.allow()
    assert breaker.state is OPEN
    clock.advance(0.001)
    assert breaker.allow()
    assert breaker.state is HALF_OPEN
    assert not breaker.allow()  # only one trial at a time
    assert breaker.rejected_total == 2
    assert transitions == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_trial_success_closes(
    breaker: CircuitBreaker,
    clock: FakeClock,
    transitions: list[tuple[CircuitState, CircuitState]],
) -> None:
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.allow() and breaker.allow()
    assert transitions[-1] == (HALF_OPEN, CLOSED)
    # Closed again means a fresh count: one failure does not reopen.
    fail(breaker, 1)
    assert breaker.state is CLOSED


def test_trial_failure_reopens_and_restarts_the_timer(
    breaker: CircuitBreaker,
    clock: FakeClock,
    transitions: list[tuple[CircuitState, CircuitState]],
) -> None:
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow()
    clock.advance(2)
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.opened_total == 2
    clock.advance(9.5)  # 11.5 s since first opening, 9.5 s since re-opening
    assert not breaker.allow()
    clock.advance(0.5)
    assert breaker.allow()
    assert transitions == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
    ]


def test_a_trial_that_never_reports_is_replaced_after_reset_s(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow()  # trial goes out and its caller is cancelled
    clock.advance(5)
    assert not breaker.allow()
    clock.advance(5)
    assert breaker.allow()
    assert breaker.state is HALF_OPEN


def test_late_results_while_open_do_not_change_state(breaker: CircuitBreaker) -> None:
    fail(breaker, 3)
    breaker.record_success()
    assert breaker.state is OPEN
    breaker.record_failure()
    assert breaker.state is OPEN
    assert (breaker.failures_total, breaker.opened_total) == (4, 1)


def test_threshold_one_opens_on_first_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_s=0.0, now=clock)
    fail(breaker, 1)
    assert breaker.state is OPEN
    assert breaker.allow()  # reset_s=0: the trial is due at once
    assert breaker.state is HALF_OPEN


def test_callback_sees_the_new_state(clock: FakeClock) -> None:
    seen: list[CircuitState] = []
    holder: list[CircuitBreaker] = []

    def on_transition(old: CircuitState, new: CircuitState) -> None:
        seen.append(holder[0].state)

    breaker = CircuitBreaker(1, 1.0, now=clock, on_transition=on_transition)
    holder.append(breaker)
    fail(breaker, 1)
    assert seen == [OPEN]


def test_default_clock_is_monotonic() -> None:
    breaker = CircuitBreaker(1, 3600.0)
    fail(breaker, 1)
    assert not breaker.allow()


@pytest.mark.parametrize(("threshold", "reset_s"), [(0, 1.0), (1, -0.1)])
def test_rejects_bad_settings(threshold: int, reset_s: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, reset_s)


def test_repr_names_the_state(breaker: CircuitBreaker) -> None:
    assert "state=closed" in repr(breaker)
