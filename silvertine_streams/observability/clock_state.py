"""The clock's state: the pure decisions behind :class:`~.clock.ClockSync`.

:func:`clock_state` decides how far the wall clock can be trusted,
:func:`estimate_drift_ppm` fits the offset's trend, and :func:`clock_event`
turns a :class:`ClockSnapshot` into the ``system`` event that reports it. No
network, no threads: all tested without either.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from silvertine_streams.events.model import Severity, SystemEvent

_NS = 1_000_000_000


class ClockState(enum.StrEnum):
    """How far the local wall clock can be trusted."""

    SYNCHRONISED = "synchronised"
    UNSYNCHRONISED = "unsynchronised"
    DRIFTING = "drifting"


@dataclass(frozen=True, slots=True)
class ClockSnapshot:
    """What :class:`ClockSync` knows at one moment; replaced whole, never changed.

    Attributes:
        state: synchronised, unsynchronised or drifting.
        offset_s: server time minus local wall time, seconds, from the last good
            reply; ``0.0`` until a server has answered.
        offset_ns: ``offset_s`` in whole nanoseconds, what :meth:`ClockSync.now_ns` adds.
        delay_s: round-trip delay of the last good reply, or ``None``.
        drift_ppm: rate at which the offset grows, parts per million (positive:
            the local clock runs slow), or ``None`` with too few samples.
        last_sync_mono_ns: ``time.monotonic_ns()`` of the last good reply, or ``None``.
        server: the server (as configured) that gave the last good reply, or ``None``.
        stratum: that server's stratum, or ``None``.
        error: why the last round got no good reply, for a person; ``None`` after a good one.
        checked_mono_ns: ``time.monotonic_ns()`` when the state was last evaluated.
        max_offset_ms: the drift alarm threshold in force.
        stale_after_s: how long without a good reply before the clock is unsynchronised.
    """

    state: ClockState
    offset_s: float = 0.0
    delay_s: float | None = None
    drift_ppm: float | None = None
    last_sync_mono_ns: int | None = None
    server: str | None = None
    stratum: int | None = None
    error: str | None = None
    checked_mono_ns: int = 0
    max_offset_ms: float = 0.0
    stale_after_s: float = 0.0
    offset_ns: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset_ns", round(self.offset_s * _NS))

    @property
    def since_sync_s(self) -> float | None:
        """Seconds from the last good reply to the last evaluation, or ``None``."""
        if self.last_sync_mono_ns is None:
            return None
        return (self.checked_mono_ns - self.last_sync_mono_ns) / _NS


def estimate_drift_ppm(samples: Sequence[tuple[int, float]]) -> float | None:
    """Fit a line to ``(monotonic_ns, offset_s)`` samples; return its slope in ppm.

    A least-squares slope over several samples rides out the jitter of single
    replies. Positive means the offset grows: the local clock runs slow.

    Returns:
        The drift in parts per million, or ``None`` with fewer than two samples
        or when all samples were taken at the same instant.
    """
    if len(samples) < 2:
        return None
    # Centre the times before squaring: monotonic_ns values are ~1e15 and their
    # squares would lose the differences in float rounding.
    t0 = samples[0][0]
    times = [(mono_ns - t0) / _NS for mono_ns, _ in samples]
    offsets = [offset for _, offset in samples]
    mean_t = math.fsum(times) / len(times)
    mean_o = math.fsum(offsets) / len(offsets)
    spread = math.fsum((t - mean_t) ** 2 for t in times)
    if spread == 0.0:
        return None
    slope = math.fsum((t - mean_t) * (o - mean_o) for t, o in zip(times, offsets, strict=True))
    return slope / spread * 1e6


def clock_state(
    *,
    offset_s: float,
    last_sync_mono_ns: int | None,
    now_mono_ns: int,
    stale_after_s: float,
    max_offset_ms: float,
) -> ClockState:
    """Decide the clock's state from the last good reply and the time now.

    Unsynchronised when no server ever answered or the last answer is at least
    ``stale_after_s`` old; else drifting when ``|offset_s|`` exceeds
    ``max_offset_ms``; else synchronised.
    """
    if last_sync_mono_ns is None or now_mono_ns - last_sync_mono_ns >= stale_after_s * _NS:
        return ClockState.UNSYNCHRONISED
    if abs(offset_s) * 1000.0 > max_offset_ms:
        return ClockState.DRIFTING
    return ClockState.SYNCHRONISED


def clock_event(snapshot: ClockSnapshot, *, source: str = "silvertine.clock") -> SystemEvent:
    """Build the ``system`` event that reports ``snapshot``'s state.

    Kinds: ``clock_drift`` (warning), ``clock_unsynchronised`` (warning) and
    ``clock_synchronised`` (info, on recovery). ``ts_ns`` is corrected wall time.
    """
    offset_ms = snapshot.offset_s * 1000.0
    where = f" from {snapshot.server}" if snapshot.server else ""
    if snapshot.state is ClockState.DRIFTING:
        kind, severity = "clock_drift", Severity.WARNING
        message = f"clock offset {offset_ms:+.1f} ms{where} exceeds {snapshot.max_offset_ms:g} ms"
    elif snapshot.state is ClockState.UNSYNCHRONISED:
        kind, severity = "clock_unsynchronised", Severity.WARNING
        if snapshot.last_sync_mono_ns is None:
            message = "no NTP server has answered"
        else:
            message = f"no NTP server has answered for {snapshot.since_sync_s:.0f} s"
        if snapshot.error:
            message += f"; last error: {snapshot.error}"
    else:
        kind, severity = "clock_synchronised", Severity.INFO
        message = f"clock synchronised{where}, offset {offset_ms:+.1f} ms"
    details: dict[str, object] = {
        "state": snapshot.state.value,
        "offset_ms": offset_ms,
        "delay_ms": None if snapshot.delay_s is None else snapshot.delay_s * 1000.0,
        "drift_ppm": snapshot.drift_ppm,
        "server": snapshot.server,
        "stratum": snapshot.stratum,
        "since_sync_s": snapshot.since_sync_s,
        "max_offset_ms": snapshot.max_offset_ms,
        "error": snapshot.error,
    }
    return SystemEvent(
        kind=kind,
        severity=severity,
        message=message,
        details=details,
        source=source,
        ts_ns=time.time_ns() + snapshot.offset_ns,
    )
