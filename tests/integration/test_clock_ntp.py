"""ClockSync against a real NTP server: chronyd on a loopback UDP port.

chronyd serves this machine's own clock, so a good sync has an offset of
about zero. Every chronyd is stopped by PID; every ClockSync is stopped and
must join within its deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.observability.clock import ClockSnapshot, ClockState, ClockSync
from tests import ntp_server as ntp_server_module
from tests.helpers import wait_for
from tests.ntp_server import INSTALL_HINT, NtpServer, pick_free_udp_port, start_chronyd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SYNCED, UNSYNCED = ClockState.SYNCHRONISED, ClockState.UNSYNCHRONISED
# Loopback to a server reading the same clock: offsets are tens of microseconds.
SMALL_OFFSET_S = 0.005


class Recorder:
    """An ``on_change`` callback that keeps every call, for any thread to read."""

    def __init__(self) -> None:
        self.calls: list[tuple[ClockState | None, ClockState, ClockSnapshot]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, old: ClockState | None, new: ClockState, snapshot: ClockSnapshot) -> None:
        with self._lock:
            self.calls.append((old, new, snapshot))
            self.threads.add(threading.current_thread().name)

    def transitions(self) -> list[tuple[ClockState | None, ClockState]]:
        with self._lock:
            return [(old, new) for old, new, _ in self.calls]


def start_or_fail(workdir: Path, port: int = 0) -> NtpServer:
    try:
        return start_chronyd(workdir, port=port)
    except EmbeddedServerError as exc:
        # Fail, never skip: a skipped clock test looks green where nothing was tested.
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def ntp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NtpServer]:
    """One chronyd for the tests that only read from it."""
    server = start_or_fail(tmp_path_factory.mktemp("chronyd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def syncs() -> Iterator[list[ClockSync]]:
    """ClockSyncs to stop after the test; each must join within its deadline."""
    started: list[ClockSync] = []
    yield started
    for sync in started:
        assert sync.stop(), "the clock sync worker did not stop within its deadline"


def test_syncs_with_a_real_server_to_a_small_offset(
    ntp_server: NtpServer, syncs: list[ClockSync]
) -> None:
    recorder = Recorder()
    sync = ClockSync(
        [ntp_server.address],
        interval_s=0.1,
        timeout_s=1.0,
        max_offset_ms=50.0,
        stale_after_s=5.0,
        on_change=recorder,
    )
    syncs.append(sync)
    sync.start()
    wait_for(lambda: sync.snapshot().state is SYNCED, message="synchronised with chronyd")
    wait_for(lambda: sync.snapshot().drift_ppm is not None, message="a drift estimate")
    snap = sync.snapshot()
    assert snap.server == ntp_server.address
    assert snap.stratum == 8  # chronyd's "local stratum 8"
    assert abs(snap.offset_s) < SMALL_OFFSET_S
    assert snap.delay_s is not None and 0 <= snap.delay_s < 0.5
    assert snap.last_sync_mono_ns is not None and snap.error is None
    assert recorder.transitions() == [(None, SYNCED)]
    assert recorder.threads == {"silvertine-clock-sync"}
    assert abs(sync.now_ns() - time.time_ns()) < SMALL_OFFSET_S * 1e9


def test_falls_over_from_a_dead_port_to_the_real_server(
    ntp_server: NtpServer, syncs: list[ClockSync]
) -> None:
    dead = f"127.0.0.1:{pick_free_udp_port()}"
    sync = ClockSync([dead, ntp_server.address], interval_s=0.1, timeout_s=1.0)
    syncs.append(sync)
    sync.start()
    wait_for(lambda: sync.snapshot().state is SYNCED, message="synchronised via failover")
    assert sync.snapshot().server == ntp_server.address


def test_a_dead_port_leaves_it_unsynchronised_and_the_worker_running(
    syncs: list[ClockSync],
) -> None:
    recorder = Recorder()
    dead = f"127.0.0.1:{pick_free_udp_port()}"
    sync = ClockSync(
        [dead],
        interval_s=0.05,
        timeout_s=0.3,
        stale_after_s=1.0,
        on_change=recorder,
    )
    syncs.append(sync)
    sync.start()
    wait_for(lambda: recorder.calls, message="the first state reported")
    first = sync.snapshot().checked_mono_ns
    # The worker goes on trying: later rounds re-evaluate the state.
    wait_for(lambda: sync.snapshot().checked_mono_ns > first, message="later rounds")
    assert recorder.transitions() == [(None, UNSYNCED)]
    snap = sync.snapshot()
    assert snap.state is UNSYNCED and snap.last_sync_mono_ns is None
    # ntplib's socket is unconnected, so the kernel's "port unreachable" is not
    # reported to it: a dead port looks like a silent server and times out.
    assert snap.error == f"{dead}: No response received from 127.0.0.1."
    assert sync.running
    assert sync.now_ns() - time.time_ns() < 5_000_000  # no offset applied
    started = time.monotonic()
    assert sync.stop() is True
    assert time.monotonic() - started < 1.5
    assert not sync.running


def test_a_silent_server_times_out_and_stop_keeps_its_deadline(syncs: list[ClockSync]) -> None:
    # A bound UDP socket that never answers: each query waits its full timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        recorder = Recorder()
        sync = ClockSync([f"127.0.0.1:{port}"], interval_s=0.05, timeout_s=1.0, on_change=recorder)
        syncs.append(sync)
        sync.start()
        wait_for(lambda: recorder.calls, message="the first state reported")
        assert recorder.transitions() == [(None, UNSYNCED)]
        assert "No response received" in (sync.snapshot().error or "")
        silent.setblocking(False)
        while True:  # drop the queries already received
            try:
                silent.recvfrom(512)
            except BlockingIOError:
                break
        silent.settimeout(5.0)
        silent.recvfrom(512)  # a new query: it is in flight for about a second
        assert sync.stop(timeout_s=0.05) is False  # the deadline is kept, not the query
        assert sync.running
        started = time.monotonic()
        assert sync.stop() is True  # default deadline: timeout_s + 1
        assert time.monotonic() - started < 1.5
        assert not sync.running


def test_turns_unsynchronised_when_the_server_goes_away_and_recovers(
    tmp_path: Path, syncs: list[ClockSync]
) -> None:
    server = start_or_fail(tmp_path / "first")
    stale_after_s = 1.0
    recorder = Recorder()
    sync = ClockSync(
        [server.address],
        interval_s=0.1,
        timeout_s=0.2,
        stale_after_s=stale_after_s,
        on_change=recorder,
    )
    syncs.append(sync)
    try:
        sync.start()
        wait_for(lambda: sync.snapshot().state is SYNCED, message="synchronised")
        server.stop()
        wait_for(
            lambda: sync.snapshot().state is UNSYNCED,
            timeout=stale_after_s + 5.0,
            message="unsynchronised after the server went away",
        )
    finally:
        server.stop()
    old, new, snap = recorder.calls[-1]
    assert (old, new) == (SYNCED, UNSYNCED)
    assert snap.since_sync_s is not None and snap.since_sync_s >= stale_after_s
    assert snap.error is not None and server.address in snap.error
    assert abs(snap.offset_s) < SMALL_OFFSET_S  # the last known offset is kept
    assert sync.running

    # The server returns on the same port: the worker, still trying, syncs again.
    with_port = start_or_fail(tmp_path / "second", port=server.port)
    try:
        wait_for(lambda: sync.snapshot().state is SYNCED, message="synchronised again")
    finally:
        with_port.stop()
    assert recorder.transitions() == [(None, SYNCED), (SYNCED, UNSYNCED), (UNSYNCED, SYNCED)]


def test_a_missing_chronyd_fails_loudly_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(ntp_server_module, "_CHRONYD_PATHS", (str(tmp_path / "chronyd"),))
    with pytest.raises(EmbeddedServerError, match="chronyd is not installed") as caught:
        start_chronyd(tmp_path / "work")
    assert INSTALL_HINT in str(caught.value)
    assert not (tmp_path / "work").exists()  # nothing was started or written
