"""Clock sync against NTP servers, and the timestamp checks that depend on it.

:class:`ClockSync` asks NTP servers for the offset of the local wall clock in a
daemon thread and publishes an immutable :class:`ClockSnapshot`. The engine
stamps ``ts_ns`` with :meth:`ClockSync.now_ns` (wall time corrected by the last
offset). Wall time may step in either direction when the offset changes, so
anything that measures an *interval* (timeouts, latencies, staleness) uses
``time.monotonic_ns()`` instead, never ``ts_ns`` differences.

The decisions are pure functions, tested without a network:
:func:`clock_state`, :func:`estimate_drift_ppm`, :func:`reply_problem`,
:func:`parse_server` and :class:`TimestampCheck`.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import ntplib

from silvertine_streams.events.model import Severity, SystemEvent

log = logging.getLogger(__name__)

NTP_PORT = 123
NTP_VERSION = 3
DRIFT_WINDOW = 8
"""Offset samples (from one server) the drift estimate is fitted to."""

_NS = 1_000_000_000
_SERVER_MODE = 4
_LEAP_ALARM = 3  # leap indicator 3: the server's own clock is not synchronised
_STRATUM_UNSYNCHRONISED = 16


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


@dataclass(frozen=True, slots=True)
class NtpReply:
    """The parts of an NTP server reply that clock sync uses.

    Attributes:
        offset_s: server time minus local time, seconds.
        delay_s: round-trip delay, seconds.
        stratum: the server's stratum (0 = kiss-o'-death, 16 = unsynchronised).
        leap: leap indicator (3 = the server's clock is not synchronised).
        mode: NTP mode of the packet (4 = server).
    """

    offset_s: float
    delay_s: float
    stratum: int
    leap: int
    mode: int = _SERVER_MODE


Query = Callable[[str, int, float], NtpReply]
"""``query(host, port, timeout_s)``: ask one server; raise on no or bad answer."""

OnChange = Callable[[ClockState | None, ClockState, ClockSnapshot], None]
"""``on_change(old_state, new_state, snapshot)``; ``old_state`` is ``None`` on the first report."""


# --- pure decisions ----------------------------------------------------------


def parse_server(text: str) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` into host and port.

    A bare IPv6 address (two or more colons, no brackets) takes the NTP port.

    Raises:
        ValueError: the text is empty or the port is not in 1..65535.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"NTP server {text!r}: expected [address] or [address]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"NTP server {text!r}: no host")
    if not port_text:
        return host, NTP_PORT
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"NTP server {text!r}: port must be 1..65535")
    return host, int(port_text)


def reply_problem(reply: NtpReply) -> str | None:
    """Say why a reply must not be used to set the offset, or return ``None``."""
    if reply.mode != _SERVER_MODE:
        return f"not a server reply (mode {reply.mode})"
    if reply.leap == _LEAP_ALARM:
        return "server clock is not synchronised (leap indicator 3)"
    if reply.stratum == 0:
        return "server refused the request (kiss-o'-death, stratum 0)"
    if reply.stratum >= _STRATUM_UNSYNCHRONISED:
        return f"server is unsynchronised (stratum {reply.stratum})"
    if not (math.isfinite(reply.offset_s) and math.isfinite(reply.delay_s)):
        return "offset or delay is not a finite number"
    if reply.delay_s < 0:
        return f"negative round-trip delay ({reply.delay_s:.6f} s)"
    return None


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


@dataclass(frozen=True, slots=True)
class TimestampCheck:
    """Reject event timestamps too far in the future or before a floor.

    Attributes:
        future_tolerance_s: how far past ``now`` a timestamp may lie.
        floor: the earliest timestamp accepted; timezone-aware.
    """

    future_tolerance_s: float
    floor: datetime

    def __post_init__(self) -> None:
        if not (math.isfinite(self.future_tolerance_s) and self.future_tolerance_s >= 0):
            raise ValueError(f"future_tolerance_s must be >= 0, got {self.future_tolerance_s!r}")
        if self.floor.utcoffset() is None:
            raise ValueError("floor must be timezone-aware")

    def check(self, event_timestamp: datetime, now: float) -> str | None:
        """Say why ``event_timestamp`` is implausible, or return ``None`` if it is fine.

        Args:
            event_timestamp: the event's ``timestamp``.
            now: corrected wall time, seconds since the epoch
                (``clock.now_ns() / 1e9``).
        """
        if event_timestamp.utcoffset() is None:
            return f"timestamp {event_timestamp.isoformat()} has no timezone"
        if event_timestamp < self.floor:
            return (
                f"timestamp {event_timestamp.isoformat()} is before the earliest accepted "
                f"{self.floor.isoformat()}"
            )
        ahead_s = event_timestamp.timestamp() - now
        if ahead_s > self.future_tolerance_s:
            return (
                f"timestamp {event_timestamp.isoformat()} is {ahead_s:.3f} s in the future "
                f"(tolerance {self.future_tolerance_s:g} s)"
            )
        return None


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


def ntp_query(host: str, port: int, timeout_s: float) -> NtpReply:
    """Ask one NTP server (version 3) for the time.

    Raises:
        ntplib.NTPException: no reply within ``timeout_s``, or a malformed one.
        OSError: the name does not resolve, or the network is unreachable. (A
            closed port is not reported: ntplib's socket is unconnected, so the
            kernel's "port unreachable" never reaches it and the query times out.)
    """
    stats = ntplib.NTPClient().request(host, port=port, version=NTP_VERSION, timeout=timeout_s)
    return NtpReply(
        offset_s=float(stats.offset),
        delay_s=float(stats.delay),
        stratum=int(stats.stratum),
        leap=int(stats.leap),
        mode=int(stats.mode),
    )


# --- the worker ----------------------------------------------------------------


class ClockSync:
    """Keep the local clock's NTP offset current in a daemon thread.

    Every ``interval_s`` the worker asks the servers in turn, starting with the
    one that answered last, until one gives a usable reply. It never raises
    into its caller and survives unreachable servers; state changes go to
    ``on_change``, which runs **on the worker thread**: keep it short and hand
    work to the event loop with ``loop.call_soon_threadsafe``. The first
    evaluation after :meth:`start` is always reported, with ``old_state=None``.

    Reads (:meth:`snapshot`, :meth:`now_ns`) are lock-free: the worker replaces
    one immutable snapshot, and a reference read is atomic.
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        interval_s: float = 64.0,
        timeout_s: float = 2.0,
        max_offset_ms: float = 100.0,
        stale_after_s: float = 300.0,
        on_change: OnChange | None = None,
        query: Query = ntp_query,
    ) -> None:
        """Configure; nothing runs until :meth:`start`.

        Args:
            servers: ``host`` or ``host:port`` (``[v6]:port`` for IPv6), in order of preference.
            interval_s: seconds between sync rounds.
            timeout_s: seconds to wait for each server's reply.
            max_offset_ms: ``|offset|`` above this is ``drifting``.
            stale_after_s: seconds without a good reply before ``unsynchronised``.
            on_change: called as ``on_change(old_state, new_state, snapshot)``.
            query: asks one server; replaceable for tests.

        Raises:
            ValueError: no servers, a malformed server, or a non-positive number.
        """
        if not servers:
            raise ValueError("at least one NTP server is needed")
        self._servers = [(name.strip(), *parse_server(name)) for name in servers]
        for label, value in (
            ("interval_s", interval_s),
            ("timeout_s", timeout_s),
            ("max_offset_ms", max_offset_ms),
            ("stale_after_s", stale_after_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_offset_ms = max_offset_ms
        self.stale_after_s = stale_after_s
        self._on_change = on_change
        self._query = query
        self._snapshot = ClockSnapshot(
            state=ClockState.UNSYNCHRONISED,
            checked_mono_ns=time.monotonic_ns(),
            max_offset_ms=max_offset_ms,
            stale_after_s=stale_after_s,
        )
        self._samples: collections.deque[tuple[int, float]] = collections.deque(maxlen=DRIFT_WINDOW)
        self._preferred = 0
        self._reported = False
        self._lifecycle = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reads, from any thread ------------------------------------------------

    def snapshot(self) -> ClockSnapshot:
        """Return the latest snapshot (as of the worker's last evaluation)."""
        return self._snapshot

    def now_ns(self) -> int:
        """Return corrected wall time in ns since the epoch, for stamping ``ts_ns``.

        The last known offset is applied even when the clock is unsynchronised
        (it is still the best estimate); before any server answered this is
        plain ``time.time_ns()``. The value steps when a new offset arrives, in
        either direction: use ``time.monotonic_ns()``, not this, for intervals.
        """
        return time.time_ns() + self._snapshot.offset_ns

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread; does nothing if it is already running."""
        with self._lifecycle:
            if self.running:
                return
            self._stopping.clear()
            self._reported = False
            self._thread = threading.Thread(
                target=self._run, name="silvertine-clock-sync", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the worker to stop and join it within ``timeout_s``.

        The default deadline is ``self.timeout_s + 1``: a query in flight
        finishes within its own timeout. A worker stuck longer (e.g. in a DNS
        lookup, which has no timeout) is left behind; it is a daemon thread and
        exits at its next step, and :meth:`start` does nothing until it has.

        Returns:
            ``True`` if the worker has ended (or never ran), ``False`` on timeout.
        """
        with self._lifecycle:
            thread = self._thread
            self._stopping.set()
            if thread is None:
                return True
            thread.join(self.timeout_s + 1.0 if timeout_s is None else timeout_s)
            if thread.is_alive():
                log.warning("clock sync worker did not stop within the deadline")
                return False
            self._thread = None
            return True

    # --- the worker thread -----------------------------------------------------

    def _run(self) -> None:
        next_round_ns = time.monotonic_ns()
        while not self._stopping.is_set():
            # The worker must outlive any surprise from a library or the
            # callback: a dead clock thread would freeze the offset silently.
            try:
                if time.monotonic_ns() >= next_round_ns:
                    self._sync_round()
                    next_round_ns = time.monotonic_ns() + round(self.interval_s * _NS)
                if self._stopping.is_set():
                    break
                self._evaluate()
                wake_ns = next_round_ns
                last = self._snapshot.last_sync_mono_ns
                if last is not None and self._snapshot.state is not ClockState.UNSYNCHRONISED:
                    # Wake when the last reply goes stale, not only at the next round.
                    wake_ns = min(wake_ns, last + round(self.stale_after_s * _NS))
            except Exception:  # noqa: BLE001
                log.exception("clock sync round failed; retrying in %g s", self.interval_s)
                next_round_ns = wake_ns = time.monotonic_ns() + round(self.interval_s * _NS)
            self._stopping.wait(max(0, wake_ns - time.monotonic_ns()) / _NS)

    def _sync_round(self) -> None:
        """Ask servers, preferred first, until one gives a usable reply; record it."""
        problems: list[str] = []
        count = len(self._servers)
        for step in range(count):
            if self._stopping.is_set():
                return
            index = (self._preferred + step) % count
            label, host, port = self._servers[index]
            try:
                reply = self._query(host, port, self.timeout_s)
            # ValueError: e.g. a host name the IDNA codec rejects.
            except (ntplib.NTPException, OSError, ValueError) as exc:
                problems.append(f"{label}: {exc}")
                continue
            # Anything else is a bug, but the state must still be evaluated, or
            # the clock would stay "synchronised" while no reply arrives.
            except Exception as exc:  # noqa: BLE001
                log.exception("NTP query to %s failed unexpectedly", label)
                problems.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
            problem = reply_problem(reply)
            if problem is not None:
                problems.append(f"{label}: {problem}")
                continue
            self._record(index, label, reply)
            return
        error = "; ".join(problems)
        log.debug("no NTP server answered: %s", error)
        self._snapshot = dataclasses.replace(self._snapshot, error=error)

    def _record(self, index: int, label: str, reply: NtpReply) -> None:
        now_ns = time.monotonic_ns()
        if index != self._preferred or self._snapshot.server != label:
            # Servers disagree by their own small offsets: one line per server.
            self._samples.clear()
            self._preferred = index
        self._samples.append((now_ns, reply.offset_s))
        self._snapshot = dataclasses.replace(
            self._snapshot,
            offset_s=reply.offset_s,
            delay_s=reply.delay_s,
            drift_ppm=estimate_drift_ppm(self._samples),
            last_sync_mono_ns=now_ns,
            server=label,
            stratum=reply.stratum,
            error=None,
        )

    def _evaluate(self) -> None:
        """Recompute the state, publish the snapshot, and report a change."""
        now_ns = time.monotonic_ns()
        previous = self._snapshot
        state = clock_state(
            offset_s=previous.offset_s,
            last_sync_mono_ns=previous.last_sync_mono_ns,
            now_mono_ns=now_ns,
            stale_after_s=self.stale_after_s,
            max_offset_ms=self.max_offset_ms,
        )
        snapshot = dataclasses.replace(previous, state=state, checked_mono_ns=now_ns)
        self._snapshot = snapshot
        old: ClockState | None = previous.state if self._reported else None
        if old is state:
            return
        self._reported = True
        level = logging.INFO if state is ClockState.SYNCHRONISED else logging.WARNING
        log.log(
            level,
            "clock %s -> %s (offset %+.1f ms, server %s, error %s)",
            old,
            state,
            snapshot.offset_s * 1000.0,
            snapshot.server,
            snapshot.error,
        )
        if self._on_change is None:
            return
        try:
            self._on_change(old, state, snapshot)
        except Exception:  # noqa: BLE001  # a callback bug must not stop clock sync
            log.exception("clock on_change callback failed")
