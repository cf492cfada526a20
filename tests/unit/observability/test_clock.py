"""Unit tests for silvertine_streams.observability.clock: pure decisions, and the
worker driven by a fake ``query`` (no network; the real NTP server is in
tests/integration/test_clock_ntp.py)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import ntplib
import pytest

from silvertine_streams.events.codec import decode_event, encode_event
from silvertine_streams.events.model import Severity
from silvertine_streams.observability.clock import (
    NTP_PORT,
    ClockSnapshot,
    ClockState,
    ClockSync,
    NtpReply,
    TimestampCheck,
    clock_event,
    clock_state,
    estimate_drift_ppm,
    parse_server,
    reply_problem,
)
from tests.helpers import wait_for

SYNCED, UNSYNCED, DRIFTING = (
    ClockState.SYNCHRONISED,
    ClockState.UNSYNCHRONISED,
    ClockState.DRIFTING,
)
S = 1_000_000_000  # ns per second
T0 = 5_000_000 * S  # a monotonic_ns value of realistic size (~58 days of uptime)


def good(offset_s: float = 0.001, delay_s: float = 0.002) -> NtpReply:
    return NtpReply(offset_s=offset_s, delay_s=delay_s, stratum=2, leap=0)


# --- parse_server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pool.ntp.org", ("pool.ntp.org", NTP_PORT)),
        ("127.0.0.1:11123", ("127.0.0.1", 11123)),
        (" time.local:123 ", ("time.local", 123)),
        ("::1", ("::1", NTP_PORT)),
        ("[::1]", ("::1", NTP_PORT)),
        ("[fe80::1]:4123", ("fe80::1", 4123)),
    ],
)
def test_parse_server_accepts_host_and_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["", ":123", "host:0", "host:65536", "host:ntp", "[::1", "[::1]x"])
def test_parse_server_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="NTP server"):
        parse_server(text)


# --- reply_problem --------------------------------------------------------------


def test_reply_problem_accepts_a_normal_reply() -> None:
    assert reply_problem(good()) is None


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (NtpReply(0.0, 0.001, stratum=2, leap=0, mode=3), "not a server reply"),
        (NtpReply(0.0, 0.001, stratum=2, leap=3), "not synchronised"),
        (NtpReply(0.0, 0.001, stratum=0, leap=0), "kiss-o'-death"),
        (NtpReply(0.0, 0.001, stratum=16, leap=0), "unsynchronised"),
        (NtpReply(float("nan"), 0.001, stratum=2, leap=0), "finite"),
        (NtpReply(0.0, float("inf"), stratum=2, leap=0), "finite"),
        (NtpReply(0.0, -0.5, stratum=2, leap=0), "negative round-trip"),
    ],
)
def test_reply_problem_names_what_makes_a_reply_unusable(reply: NtpReply, words: str) -> None:
    problem = reply_problem(reply)
    assert problem is not None and words in problem


# --- estimate_drift_ppm ---------------------------------------------------------


def test_drift_needs_two_samples_at_different_times() -> None:
    assert estimate_drift_ppm([]) is None
    assert estimate_drift_ppm([(T0, 0.001)]) is None
    assert estimate_drift_ppm([(T0, 0.001), (T0, 0.002)]) is None


def test_drift_of_a_steadily_growing_offset_is_its_slope_in_ppm() -> None:
    # +10 µs of offset per second = the local clock loses 10 ppm.
    samples = [(T0 + k * 64 * S, 0.003 + k * 64 * 10e-6) for k in range(8)]
    assert estimate_drift_ppm(samples) == pytest.approx(10.0, rel=1e-9)


def test_drift_is_negative_when_the_local_clock_gains() -> None:
    samples = [(T0, 0.0), (T0 + 100 * S, -0.0025)]
    assert estimate_drift_ppm(samples) == pytest.approx(-25.0, rel=1e-9)


def test_drift_fit_rides_out_jitter_of_single_replies() -> None:
    jitter = [0.0002, -0.0002, 0.0001, -0.0001, 0.0002, -0.0002, 0.0001, -0.0001]
    samples = [(T0 + k * 10 * S, k * 10 * 5e-6 + j) for k, j in enumerate(jitter)]
    drift = estimate_drift_ppm(samples)
    assert drift is not None and drift == pytest.approx(5.0, abs=3.0)


def test_drift_of_a_constant_offset_is_zero() -> None:
    samples = [(T0 + k * S, 0.05) for k in range(5)]
    assert estimate_drift_ppm(samples) == pytest.approx(0.0, abs=1e-9)


# --- clock_state ----------------------------------------------------------------


def state(offset_s: float = 0.0, last: int | None = T0, now: int = T0 + S) -> ClockState:
    return clock_state(
        offset_s=offset_s,
        last_sync_mono_ns=last,
        now_mono_ns=now,
        stale_after_s=10.0,
        max_offset_ms=50.0,
    )


def test_state_is_unsynchronised_until_a_server_answers() -> None:
    assert state(last=None) is UNSYNCED


def test_state_is_synchronised_with_a_fresh_small_offset() -> None:
    assert state(0.049) is SYNCED
    assert state(-0.049) is SYNCED
    assert state(0.050) is SYNCED  # the threshold itself is not yet drifting


def test_state_is_drifting_beyond_the_threshold_either_way() -> None:
    assert state(0.0501) is DRIFTING
    assert state(-0.0501) is DRIFTING


def test_state_turns_unsynchronised_when_the_last_reply_is_stale() -> None:
    assert state(now=T0 + 10 * S - 1) is SYNCED
    assert state(now=T0 + 10 * S) is UNSYNCED
    assert state(0.5, now=T0 + 11 * S) is UNSYNCED  # staleness wins over drift


# --- TimestampCheck -------------------------------------------------------------

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FLOOR = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def check() -> TimestampCheck:
    return TimestampCheck(future_tolerance_s=5.0, floor=FLOOR)


def test_timestamp_check_accepts_past_and_slightly_future_stamps(check: TimestampCheck) -> None:
    now = NOW.timestamp()
    assert check.check(NOW, now) is None
    assert check.check(NOW - timedelta(days=30), now) is None
    assert check.check(NOW + timedelta(seconds=5), now) is None
    assert check.check(FLOOR, now) is None


def test_timestamp_check_rejects_stamps_beyond_the_future_tolerance(
    check: TimestampCheck,
) -> None:
    reason = check.check(NOW + timedelta(seconds=5.5), NOW.timestamp())
    assert reason == (
        "timestamp 2026-03-02T12:00:05.500000+00:00 is 5.500 s in the future (tolerance 5 s)"
    )


def test_timestamp_check_rejects_stamps_before_the_floor(check: TimestampCheck) -> None:
    reason = check.check(FLOOR - timedelta(microseconds=1), NOW.timestamp())
    assert reason is not None
    assert "before the earliest accepted 2020-01-01T00:00:00+00:00" in reason


def test_timestamp_check_compares_instants_not_wall_readings(check: TimestampCheck) -> None:
    # 13:00:04 at UTC+1 is 12:00:04 UTC: inside the tolerance.
    plus_one = timezone(timedelta(hours=1))
    assert check.check(datetime(2026, 3, 2, 13, 0, 4, tzinfo=plus_one), NOW.timestamp()) is None


def test_timestamp_check_rejects_naive_timestamps(check: TimestampCheck) -> None:
    reason = check.check(datetime(2026, 3, 2, 12, 0), NOW.timestamp())
    assert reason is not None and "no timezone" in reason


def test_timestamp_check_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="future_tolerance_s"):
        TimestampCheck(future_tolerance_s=-1.0, floor=FLOOR)
    with pytest.raises(ValueError, match="future_tolerance_s"):
        TimestampCheck(future_tolerance_s=float("nan"), floor=FLOOR)
    with pytest.raises(ValueError, match="timezone-aware"):
        TimestampCheck(future_tolerance_s=1.0, floor=datetime(2020, 1, 1))


# --- ClockSnapshot and clock_event ------------------------------------------------


def snapshot(**changes: object) -> ClockSnapshot:
    base = ClockSnapshot(
        state=SYNCED,
        offset_s=0.0123,
        delay_s=0.004,
        drift_ppm=1.5,
        last_sync_mono_ns=T0,
        server="ntp1:123",
        stratum=2,
        checked_mono_ns=T0 + 3 * S,
        max_offset_ms=50.0,
        stale_after_s=300.0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test data


def test_snapshot_is_immutable_and_keeps_offset_ns_in_step() -> None:
    snap = snapshot()
    assert snap.offset_ns == 12_300_000
    assert snap.since_sync_s == pytest.approx(3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.offset_s = 1.0  # type: ignore[misc]  # the point of the test
    assert dataclasses.replace(snap, offset_s=-0.5).offset_ns == -500_000_000
    assert ClockSnapshot(state=UNSYNCED).since_sync_s is None


def test_clock_event_for_drift() -> None:
    event = clock_event(snapshot(state=DRIFTING, offset_s=-0.0755))
    assert (event.kind, event.severity, event.source) == (
        "clock_drift",
        Severity.WARNING,
        "silvertine.clock",
    )
    assert event.message == "clock offset -75.5 ms from ntp1:123 exceeds 50 ms"
    assert event.details["offset_ms"] == pytest.approx(-75.5)
    assert event.details["server"] == "ntp1:123"
    assert event.details["drift_ppm"] == 1.5


def test_clock_event_for_a_clock_never_synchronised() -> None:
    snap = ClockSnapshot(state=UNSYNCED, error="127.0.0.1:9: refused", max_offset_ms=50.0)
    event = clock_event(snap)
    assert (event.kind, event.severity) == ("clock_unsynchronised", Severity.WARNING)
    assert event.message == "no NTP server has answered; last error: 127.0.0.1:9: refused"
    assert event.details["since_sync_s"] is None


def test_clock_event_for_a_stale_clock_and_for_recovery() -> None:
    stale = clock_event(snapshot(state=UNSYNCED, checked_mono_ns=T0 + 400 * S))
    assert stale.message == "no NTP server has answered for 400 s"
    recovered = clock_event(snapshot())
    assert (recovered.kind, recovered.severity) == ("clock_synchronised", Severity.INFO)
    assert recovered.message == "clock synchronised from ntp1:123, offset +12.3 ms"


def test_clock_event_round_trips_through_the_wire_codec_and_is_stamped_corrected() -> None:
    offset_s = 3600.0  # an hour, so the correction is visible beside scheduling noise
    before = time.time_ns()
    event = clock_event(snapshot(state=DRIFTING, offset_s=offset_s))
    after = time.time_ns()
    assert before + offset_s * S <= event.ts_ns <= after + offset_s * S
    assert decode_event(encode_event(event)) == event


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
            answer = self.answers.get(host, ntplib.NTPException(f"No response from {host}."))
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
