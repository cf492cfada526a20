"""Flow control: what to shed under overload, when we are overloaded, and how to slow down.

DESIGN §3.4 — backpressure, not loss: when the engine falls behind it slows its
intake, and sheds only event types whose policy allows it, counting every shed
event by reason. The pieces here are pure decisions; the engine owns the
pausing, the metrics and the ``system`` events.

* :data:`OverflowPolicy` and :data:`DEFAULT_OVERFLOW`: what each event type
  may lose. Orders and fills are never shed (:data:`CRITICAL_TYPES`).
* :func:`shed`: apply a policy to one batch (an envelope) and say what went.
* :class:`OverloadDetector`: consumer lag with hysteresis -> overloaded or not.
* :class:`ProducerThrottle`: how long a publisher should wait, given the lag.

Nothing here imports faust, redis or kafka, or needs an event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Final, Generic, Literal, NamedTuple, TypeVar, get_args

__all__ = [
    "CRITICAL_TYPES",
    "DEFAULT_OVERFLOW",
    "OVERFLOW_POLICIES",
    "SHED_REASONS",
    "OverflowPolicy",
    "OverloadDetector",
    "ProducerThrottle",
    "ShedResult",
    "policy_for",
    "shed",
    "stream_key_of",
]

E = TypeVar("E")
T = TypeVar("T")

OverflowPolicy = Literal["block", "conflate", "drop_oldest", "drop_newest"]
"""What to do with events beyond capacity; the same values as ``settings.OverflowPolicy``.

* ``block``: shed nothing; the caller stops taking more (backpressure).
* ``conflate``: keep only the latest event per stream key.
* ``drop_oldest``: keep the newest ``capacity`` events.
* ``drop_newest``: keep the first ``capacity`` events, refuse the rest.
"""

OVERFLOW_POLICIES: Final[tuple[OverflowPolicy, ...]] = get_args(OverflowPolicy)
"""Every policy, for validating configuration."""
_POLICY_SET: Final = frozenset(OVERFLOW_POLICIES)

REASON_CONFLATED: Final = "conflated"
REASON_DROPPED_OLDEST: Final = "dropped_oldest"
REASON_DROPPED_NEWEST: Final = "dropped_newest"

SHED_REASONS: Final[Mapping[OverflowPolicy, str]] = {
    "conflate": REASON_CONFLATED,
    "drop_oldest": REASON_DROPPED_OLDEST,
    "drop_newest": REASON_DROPPED_NEWEST,
}
"""The metric ``reason`` label of events each shedding policy removes."""

CRITICAL_TYPES: Final = frozenset({"order", "fill"})
"""Event types that must never be shed, whatever the configuration says."""

DEFAULT_OVERFLOW: Final[dict[str, OverflowPolicy]] = {
    "market_data": "conflate",
    "order": "block",
    "fill": "block",
    "signal": "block",
    "system": "block",
}
"""The overflow policy of each event type (keyed by ``EventType`` value)."""

stream_key_of: Final[Callable[[object], Hashable]] = attrgetter("source", "partition_key")
"""The default key: ``(event.source, event.partition_key)``, one per sequenced stream.

An ``attrgetter`` rather than a lambda: it builds the tuple in C, ~15% faster.
"""


def policy_for(
    event_type: str, overrides: Mapping[str, OverflowPolicy] | None = None
) -> OverflowPolicy:
    """Return the overflow policy of ``event_type``, refusing to shed critical types.

    Args:
        event_type: an ``EventType`` value such as ``"market_data"``.
        overrides: configured policies that win over :data:`DEFAULT_OVERFLOW`.

    Returns:
        The policy; ``"block"`` for a type neither mapping knows.

    Raises:
        ValueError: the policy is unknown, or would shed a type in :data:`CRITICAL_TYPES`.
    """
    policy = (overrides or {}).get(event_type) or DEFAULT_OVERFLOW.get(event_type, "block")
    if policy not in OVERFLOW_POLICIES:
        raise ValueError(
            f"unknown overflow policy {policy!r} for {event_type}; valid: {OVERFLOW_POLICIES}"
        )
    if event_type in CRITICAL_TYPES and policy != "block":
        raise ValueError(f"{event_type} events are critical: overflow policy must be 'block'")
    return policy


class ShedResult(NamedTuple, Generic[E]):
    """What :func:`shed` kept and what it removed.

    Attributes:
        kept: the events to process, in their input order.
        shed: the removed events, in their input order; the caller counts them.
        reason: the metric label of ``shed`` (see :data:`SHED_REASONS`);
            ``""`` exactly when nothing was shed.
    """

    kept: list[E]
    shed: list[E]
    reason: str


def shed(
    events: list[E],
    policy: OverflowPolicy,
    capacity: int,
    key: Callable[[E], Hashable] = stream_key_of,
) -> ShedResult[E]:
    """Apply ``policy`` to one batch; call it only while the engine is overloaded.

    ``conflate`` always conflates and ignores ``capacity``: it keeps the last
    event of every key, so the batch shrinks to at most one event per stream;
    dropping the latest value of a symbol would be worse than being behind.
    The drop policies act only when the batch holds more than ``capacity``
    events. ``block`` never sheds: blocking is the caller's job.

    Conflating ~500-event envelopes costs ~0.1 µs per event (half of it the
    default key's ``partition_key`` property).

    Args:
        events: the batch, in arrival order; not modified.
        policy: the event type's overflow policy.
        capacity: how many events the drop policies keep (>= 0).
        key: the stream an event belongs to, for ``conflate``.

    Returns:
        A :class:`ShedResult`; ``kept`` and ``shed`` partition ``events``.

    Raises:
        ValueError: ``capacity`` is negative or ``policy`` unknown.
    """
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    if policy == "conflate":
        return _conflate(events, key)
    if policy not in _POLICY_SET:
        raise ValueError(f"unknown overflow policy {policy!r}; valid: {OVERFLOW_POLICIES}")
    if policy == "block" or len(events) <= capacity:
        return ShedResult(list(events), [], "")
    if policy == "drop_oldest":
        cut = len(events) - capacity
        return ShedResult(events[cut:], events[:cut], REASON_DROPPED_OLDEST)
    return ShedResult(events[:capacity], events[capacity:], REASON_DROPPED_NEWEST)


def _conflate(events: list[E], key: Callable[[E], Hashable]) -> ShedResult[E]:
    # Walking backwards makes the first sighting of a key its last event; one
    # set probe per event beat index maps plus itertools.compress (~110 vs
    # ~130 ns per event on 500 events over 50 symbols).
    seen: set[Hashable] = set()
    remember = seen.add
    kept: list[E] = []
    gone: list[E] = []
    keep, drop = kept.append, gone.append
    for event in reversed(events):
        stream = key(event)
        if stream in seen:
            drop(event)
        else:
            remember(stream)
            keep(event)
    kept.reverse()
    if not gone:
        return ShedResult(kept, gone, "")
    gone.reverse()
    return ShedResult(kept, gone, REASON_CONFLATED)


class OverloadDetector:
    """Decide whether the engine is overloaded from its consumer lag, with hysteresis.

    Overloaded starts when the lag goes above ``high_lag`` and ends only when
    it falls below ``low_lag``, so a lag hovering near one threshold does not
    flap between shedding and not shedding.

    Attributes:
        high_lag: lag (messages behind the high-water mark) above which overload starts.
        low_lag: lag below which it ends (<= ``high_lag``).
        overloaded: the current verdict.
        since: ``now()`` when the current overload started; ``None`` when not overloaded.
        entered_total: how many times overload started.
        last_lag: the lag of the last :meth:`update`.
    """

    __slots__ = ("high_lag", "low_lag", "_now", "overloaded", "since", "entered_total", "last_lag")

    def __init__(
        self, high_lag: int, low_lag: int, *, now: Callable[[], float] = time.monotonic
    ) -> None:
        """Create a detector that is not overloaded.

        Args:
            high_lag: enter overload above this lag (>= 0).
            low_lag: leave overload below this lag (0 <= low_lag <= high_lag).
            now: the clock ``since`` is read from.

        Raises:
            ValueError: the thresholds are out of order or negative.
        """
        if not 0 <= low_lag <= high_lag:
            raise ValueError(f"need 0 <= low_lag <= high_lag, got {low_lag}, {high_lag}")
        self.high_lag = high_lag
        self.low_lag = low_lag
        self._now = now
        self.overloaded = False
        self.since: float | None = None
        self.entered_total = 0
        self.last_lag = 0

    def update(self, lag: int) -> bool:
        """Feed the latest lag and return whether the engine is overloaded.

        Args:
            lag: messages between the committed (or processed) offset and the
                high-water mark, summed over the lane's partitions.
        """
        self.last_lag = lag
        if self.overloaded:
            if lag < self.low_lag:
                self.overloaded = False
                self.since = None
        elif lag > self.high_lag:
            self.overloaded = True
            self.since = self._now()
            self.entered_total += 1
        return self.overloaded

    def overloaded_for_s(self) -> float:
        """Return how long the current overload has lasted, 0.0 when not overloaded."""
        return 0.0 if self.since is None else self._now() - self.since


@dataclass(frozen=True, slots=True)
class ProducerThrottle:
    """How long a publisher should wait before its next publish, from the engine's load.

    Stateless: the wait depends only on how far the observed load is over its
    bound, so a stale reading called many times cannot ratchet the wait up.
    Under both bounds the wait is 0. Above, with ``over`` the larger of
    ``lag / max_lag`` and ``backlog / max_backlog``, the wait grows
    geometrically from ``min_wait_s`` just over the bound to ``max_wait_s`` at
    ``saturate_at`` times the bound, and stays there. The publisher awaits
    ``asyncio.sleep(wait)``: slowing down is never an error.

    Attributes:
        max_lag: engine consumer lag (messages) above which to wait; 0 = ignore lag.
        max_backlog: Redis ingress backlog (entries not yet mirrored) above
            which to wait; 0 = ignore backlog.
        min_wait_s: the wait just over a bound (> 0).
        max_wait_s: the cap on every wait (>= min_wait_s).
        saturate_at: the overload ratio at which the wait reaches the cap (> 1).
    """

    max_lag: int
    max_backlog: int
    min_wait_s: float = 0.001
    max_wait_s: float = 1.0
    saturate_at: float = 2.0

    def __post_init__(self) -> None:
        if self.max_lag < 0 or self.max_backlog < 0:
            raise ValueError(
                f"bounds must be >= 0 (0 = off), got {self.max_lag}, {self.max_backlog}"
            )
        if not 0 < self.min_wait_s <= self.max_wait_s:
            raise ValueError(
                f"need 0 < min_wait_s <= max_wait_s, got {self.min_wait_s}, {self.max_wait_s}"
            )
        if not self.saturate_at > 1:
            raise ValueError(f"saturate_at must be > 1, got {self.saturate_at}")

    def overload(self, lag: int, backlog: int) -> float:
        """Return the larger of ``lag / max_lag`` and ``backlog / max_backlog`` (0 if both off)."""
        over = lag / self.max_lag if self.max_lag else 0.0
        if self.max_backlog:
            over = max(over, backlog / self.max_backlog)
        return over

    def wait_s(self, lag: int, backlog: int) -> float:
        """Return the seconds to wait before the next publish.

        Args:
            lag: the engine's consumer lag for the target type, in messages.
            backlog: entries in the Redis ingress stream not yet mirrored to Kafka.

        Returns:
            0.0 when both are within their bounds, else a wait in
            ``[min_wait_s, max_wait_s]`` that grows with the overload.
        """
        over = self.overload(lag, backlog)
        if over <= 1.0:
            return 0.0
        if over >= self.saturate_at:
            return self.max_wait_s
        fraction = (over - 1.0) / (self.saturate_at - 1.0)
        return float(self.min_wait_s * (self.max_wait_s / self.min_wait_s) ** fraction)
