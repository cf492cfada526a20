"""Clock sync against NTP servers, and the timestamp checks that depend on it.

:class:`ClockSync` asks NTP servers for the offset of the local wall clock in a
daemon thread and publishes an immutable :class:`ClockSnapshot`. The engine
stamps ``ts_ns`` with :meth:`ClockSync.now_ns` (wall time corrected by the last
offset). Wall time may step in either direction when the offset changes, so
anything that measures an *interval* (timeouts, latencies, staleness) uses
``time.monotonic_ns()`` instead, never ``ts_ns`` differences.

The decisions are pure functions, tested without a network, in sibling
modules re-exported here: :mod:`.clock_state` (:func:`clock_state`,
:func:`estimate_drift_ppm`, :func:`clock_event`), :mod:`.ntp`
(:func:`reply_problem`, :func:`parse_server`, :func:`ntp_query`) and
:mod:`.timestamps` (:class:`TimestampCheck`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

import ntplib

from silvertine_streams.domain.timestamps import TimestampCheck
from silvertine_streams.observability.clock_state import (
    ClockSnapshot,
    ClockState,
    clock_event,
    clock_state,
    estimate_drift_ppm,
)
from silvertine_streams.observability.ntp import (
    NTP_PORT,
    NTP_VERSION,
    NtpReply,
    Query,
    ntp_query,
    parse_server,
    reply_problem,
)

__all__ = [
    "DRIFT_WINDOW",
    "NTP_PORT",
    "NTP_VERSION",
    "ClockSnapshot",
    "ClockState",
    "ClockSync",
    "NtpReply",
    "OnChange",
    "Query",
    "TimestampCheck",
    "clock_event",
    "clock_state",
    "estimate_drift_ppm",
    "ntp_query",
    "parse_server",
    "reply_problem",
]

log = logging.getLogger(__name__)

DRIFT_WINDOW = 8
"""Offset samples (from one server) the drift estimate is fitted to."""

_NS = 1_000_000_000


OnChange = Callable[[ClockState | None, ClockState, ClockSnapshot], None]
"""``on_change(old_state, new_state, snapshot)``; ``old_state`` is ``None`` on the first report."""


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
