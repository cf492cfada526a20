"""Unit tests for silvertine_streams.observability.clock: :class:`ClockSync` driven
by a fake ``query`` (no network; the real NTP server is in
tests/integration/test_clock_ntp.py). Its pure decisions are tested with their
modules: test_clock_state.py, test_ntp.py and tests/unit/domain/test_timestamps.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import ntplib
import pytest

from silvertine_streams.observability.clock import (
    ClockSnapshot,
    ClockState,
    ClockSync,
    NtpReply,
)
from tests.helpers import wait_for

SYNCED, UNSYNCED, DRIFTING = (
    ClockState.SYNCHRONISED,
    ClockState.UNSYNCHRONISED,
    ClockState.DRIFTING,
)


def good(offset_s: float = 0.001, delay_s: float = 0.002) -> NtpReply:
    return NtpReply(offset_s=offset_s, delay_s=delay_s, stratum=2, leap=0)


# --- ClockSync driven by a fake query -----------------------------------------------


class FakeServers:
    """Answers ``query(host, port, timeout_s)`` from a table that tests change live."""

    def __init__(self, **answers: NtpReply | BaseException) -> None:
        self.answers: dict[str, NtpReply | BaseException] = dict(answers)
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, host: str, port: int, timeout_s: float) -> NtpReply:
        with self.lock:
            self.asked.append(host)
            answer: NtpReply | BaseException = self.answers.get(
                host, ntplib.NTPException(f"No response from {host}."))
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def set(self, host: str, answer: NtpReply | BaseException) -> None:
        with self.lock:
            self.answers[host] = answer


Change = tuple[ClockState | None, ClockState, ClockSnapshot]


@pytest.fixture
def changes() -> list[Change]:
    return []


def make_sync(
    servers: list[str], fake: FakeServers, changes: list[Change], **options: float
) -> ClockSync:
    settings = {"interval_s": 0.02, "timeout_s": 0.05, "max_offset_ms": 50.0, "stale_after_s": 5.0}
    settings.update(options)
    return ClockSync(
        servers,
        on_change=lambda old, new, snap: changes.append((old, new, snap)),
        query=fake,
        **settings,
    )


@pytest.fixture
def stopper() -> Iterator[list[ClockSync]]:
    """ClockSyncs to stop after the test, even when it fails."""
    syncs: list[ClockSync] = []
    yield syncs
    for sync in syncs:
        assert sync.stop(), "worker did not stop"


@pytest.mark.parametrize(
    ("servers", "options", "words"),
    [
        ([], {}, "at least one"),
        (["host:99999"], {}, "port"),
        (["a"], {"interval_s": 0.0}, "interval_s"),
        (["a"], {"timeout_s": -1.0}, "timeout_s"),
        (["a"], {"max_offset_ms": float("inf")}, "max_offset_ms"),
        (["a"], {"stale_after_s": float("nan")}, "stale_after_s"),
    ],
)
def test_clock_sync_validates_its_configuration(
    servers: list[str], options: dict[str, float], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        ClockSync(servers, **options)  # type: ignore[arg-type]  # test data


def test_clock_sync_before_start_is_unsynchronised_and_uncorrected() -> None:
    sync = ClockSync(["ntp1"], query=FakeServers())
    assert sync.snapshot().state is UNSYNCED
    assert sync.snapshot().last_sync_mono_ns is None
    before = time.time_ns()
    assert before <= sync.now_ns() <= time.time_ns()
    assert not sync.running
    assert sync.stop() is True  # stopping what never ran is fine


def test_clock_sync_reports_first_state_then_only_changes(
    changes: list[Change], stopper: list[ClockSync]
) -> None:
    fake = FakeServers(ntp1=good(0.010))
    sync = make_sync(["ntp1"], fake, changes)
    stopper.append(sync)
    sync.start()
    sync.start()  # idempotent: still one worker
    wait_for(lambda: len(fake.asked) >= 5, message="several rounds")
    assert [(old, new) for old, new, _ in changes] == [(None, SYNCED)]
    snap = sync.snapshot()
    assert snap.server == "ntp1" and snap.stratum == 2
    assert snap.offset_s == pytest.approx(0.010) and snap.delay_s == pytest.approx(0.002)
    assert snap.drift_ppm == pytest.approx(0.0, abs=1e-6)
    assert snap.error is None

    fake.set("ntp1", good(0.2))
    wait_for(lambda: len(changes) == 2, message="drift reported")
    old, new, drift_snap = changes[1]
    assert (old, new) == (SYNCED, DRIFTING)
    assert drift_snap.offset_s == pytest.approx(0.2)
    before = time.time_ns()
    assert sync.now_ns() - before >= 200_000_000 - 5_000_000  # the offset is applied

    fake.set("ntp1", good(-0.001))
    wait_for(lambda: len(changes) == 3, message="recovery reported")
    assert changes[2][:2] == (DRIFTING, SYNCED)


def test_clock_sync_fails_over_and_prefers_the_server_that_answered(
    changes: list[Change], stopper: list[ClockSync]
) -> None:
    fake = FakeServers(
        ntp2=ConnectionRefusedError(111, "Connection refused"),
        ntp3=NtpReply(0.0, 0.001, stratum=2, leap=3),  # an unsynchronised server
        ntp4=good(0.003),
    )
    sync = make_sync(["ntp1", "ntp2", "ntp3:124", "ntp4"], fake, changes)
    stopper.append(sync)
    sync.start()
    wait_for(lambda: sync.snapshot().state is SYNCED, message="synchronised")
    assert sync.snapshot().server == "ntp4"
    first_round = len(fake.asked)
    wait_for(lambda: len(fake.asked) >= first_round + 3, message="later rounds")
    # After the first round only the preferred server is asked.
    assert set(fake.asked[4:]) == {"ntp4"}, fake.asked

    fake.set("ntp4", ntplib.NTPException("No response received from ntp4."))
    fake.set("ntp1", good(0.001))
    wait_for(lambda: sync.snapshot().server == "ntp1", message="failover to ntp1")
    # Samples from another server start afresh: ntp1 answers a constant offset, so
    # its drift is None (one sample) or 0.0 (more rounds ran, interval 20 ms); a
    # fit that still mixed in ntp4's 3 ms samples would show a non-zero drift.
    assert sync.snapshot().drift_ppm in (None, 0.0)


def test_clock_sync_turns_unsynchronised_when_replies_stop_and_names_the_errors(
    changes: list[Change], stopper: list[ClockSync]
) -> None:
    fake = FakeServers(ntp1=good())
    sync = make_sync(["ntp1", "ntp2"], fake, changes, stale_after_s=0.3, interval_s=0.05)
    stopper.append(sync)
    sync.start()
    wait_for(lambda: sync.snapshot().state is SYNCED, message="synchronised")
    fake.set("ntp1", ntplib.NTPException("No response received from ntp1."))
    wait_for(lambda: len(changes) == 2, message="unsynchronised reported")
    old, new, snap = changes[1]
    assert (old, new) == (SYNCED, UNSYNCED)
    assert snap.since_sync_s is not None and snap.since_sync_s >= 0.3
    assert snap.error == "ntp1: No response received from ntp1.; ntp2: No response from ntp2."
    assert snap.offset_s == pytest.approx(0.001)  # the last known offset is kept
    assert sync.running


def test_clock_sync_survives_a_failing_callback_and_unexpected_errors(
    stopper: list[ClockSync],
) -> None:
    calls: list[ClockState] = []

    def broken_callback(old: ClockState | None, new: ClockState, snap: ClockSnapshot) -> None:
        calls.append(new)
        raise RuntimeError("callback bug")

    fake = FakeServers(ntp1=RuntimeError("library bug"))
    sync = ClockSync(
        ["ntp1"], interval_s=0.02, timeout_s=0.05, on_change=broken_callback, query=fake
    )
    stopper.append(sync)
    sync.start()
    wait_for(lambda: len(fake.asked) >= 3, message="rounds despite the error")
    assert sync.running
    assert sync.snapshot().error == "ntp1: RuntimeError: library bug"
    fake.set("ntp1", good())
    wait_for(lambda: calls == [UNSYNCED, SYNCED], message="reports after a callback failure")
    assert sync.snapshot().error is None
    fake.set("ntp1", good(1.0))
    wait_for(lambda: calls == [UNSYNCED, SYNCED, DRIFTING], message="and after another")
    assert sync.running


def test_clock_sync_stop_joins_within_the_deadline_and_can_start_again(
    changes: list[Change],
) -> None:
    fake = FakeServers(ntp1=good())
    sync = make_sync(["ntp1"], fake, changes, interval_s=60.0)
    sync.start()
    wait_for(lambda: changes, message="first report")
    started = time.monotonic()
    assert sync.stop(timeout_s=2.0) is True
    assert time.monotonic() - started < 1.0  # the worker's wait is interrupted, not slept out
    assert not sync.running
    sync.start()
    try:
        wait_for(lambda: len(fake.asked) >= 2, message="second start syncs again")
    finally:
        assert sync.stop() is True
