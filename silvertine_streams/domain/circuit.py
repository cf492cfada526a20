"""A circuit breaker: stop calling what keeps failing, try again after a pause.

Pure: the clock is injected (``now``), nothing is awaited, nothing is logged.
The engine learns about transitions through ``on_transition`` and turns them
into a ``system`` event (``kind=circuit_open``) and a metric.

States::

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN --(reset_s elapsed, next allow())--> HALF_OPEN (one trial call)
    HALF_OPEN --success--> CLOSED
    HALF_OPEN --failure--> OPEN (the pause starts again)
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "CircuitState", "TransitionCallback"]


class CircuitState(enum.Enum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    """Calls pass; failures are counted."""
    OPEN = "open"
    """Calls are rejected until the pause is over."""
    HALF_OPEN = "half_open"
    """One trial call passes; its result decides."""


TransitionCallback = Callable[[CircuitState, CircuitState], None]
"""Called as ``on_transition(old, new)`` after the state changed."""


class CircuitBreaker:
    """Count consecutive failures of one callee and open after too many.

    Every :meth:`allow` that returns ``True`` must be followed by exactly one
    :meth:`record_success` or :meth:`record_failure`. Not thread-safe; one
    event loop owns it.

    Attributes:
        failure_threshold: consecutive failures that open the circuit.
        reset_s: seconds an open circuit waits before a trial call.
        failures_total: failures recorded, in any state.
        opened_total: transitions into OPEN (from CLOSED or HALF_OPEN).
        rejected_total: calls :meth:`allow` refused.
    """

    __slots__ = (
        "failure_threshold",
        "reset_s",
        "_now",
        "_on_transition",
        "_state",
        "_consecutive",
        "_opened_at",
        "_trial_started_at",
        "failures_total",
        "opened_total",
        "rejected_total",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_s: float = 30.0,
        *,
        now: Callable[[], float] = time.monotonic,
        on_transition: TransitionCallback | None = None,
    ) -> None:
        """Create a closed circuit breaker.

        Args:
            failure_threshold: consecutive failures that open the circuit (≥ 1).
            reset_s: seconds to stay open before one trial call (≥ 0).
            now: a monotonic clock in seconds; tests pass a fake one.
            on_transition: called as ``on_transition(old, new)`` after every
                state change. It runs inside :meth:`allow` and the
                ``record_*`` methods, so it must be quick and must not raise.

        Raises:
            ValueError: ``failure_threshold < 1`` or ``reset_s < 0``.
        """
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_s < 0:
            raise ValueError(f"reset_s must be >= 0, got {reset_s}")
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._now = now
        self._on_transition = on_transition
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_started_at: float | None = None
        self.failures_total = 0
        self.opened_total = 0
        self.rejected_total = 0

    @property
    def state(self) -> CircuitState:
        """Return the current state (does not move OPEN to HALF_OPEN; allow() does)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Return the failures since the last success."""
        return self._consecutive

    def allow(self) -> bool:
        """Return whether a call may go ahead now.

        CLOSED: always. OPEN: no, until ``reset_s`` passed since it opened;
        then the circuit turns HALF_OPEN and this call is the trial. HALF_OPEN:
        no while the trial is out — unless the trial has been out for longer
        than ``reset_s`` without a result (its caller was cancelled), in which
        case this call becomes the new trial rather than leaving the circuit
        stuck half-open forever.
        """
        state = self._state
        if state is CircuitState.CLOSED:
            return True
        now = self._now()
        if state is CircuitState.OPEN:
            if now - self._opened_at < self.reset_s:
                self.rejected_total += 1
                return False
            self._trial_started_at = now
            self._move(CircuitState.HALF_OPEN)
            return True
        trial = self._trial_started_at
        if trial is None or now - trial >= self.reset_s:
            self._trial_started_at = now
            return True
        self.rejected_total += 1
        return False

    def record_success(self) -> None:
        """Record that an allowed call succeeded.

        Closes a HALF_OPEN circuit. A success arriving while OPEN is a call
        admitted before the circuit opened; it changes nothing.
        """
        if self._state is CircuitState.CLOSED:
            self._consecutive = 0
        elif self._state is CircuitState.HALF_OPEN:
            self._consecutive = 0
            self._trial_started_at = None
            self._move(CircuitState.CLOSED)

    def record_failure(self) -> None:
        """Record that an allowed call failed (raised or timed out).

        Opens a CLOSED circuit at the threshold, and re-opens a HALF_OPEN one
        at once, restarting the pause. While OPEN it is only counted.
        """
        self.failures_total += 1
        self._consecutive += 1
        state = self._state
        if state is CircuitState.HALF_OPEN or (
            state is CircuitState.CLOSED and self._consecutive >= self.failure_threshold
        ):
            self._opened_at = self._now()
            self._trial_started_at = None
            self.opened_total += 1
            self._move(CircuitState.OPEN)

    def _move(self, new: CircuitState) -> None:
        """Change state, then tell the listener (state first, so it sees the new one)."""
        old = self._state
        self._state = new
        if self._on_transition is not None:
            self._on_transition(old, new)

    def __repr__(self) -> str:
        """Return a summary for logs."""
        return (
            f"CircuitBreaker(state={self._state.value}, consecutive={self._consecutive}, "
            f"threshold={self.failure_threshold}, reset_s={self.reset_s})"
        )
