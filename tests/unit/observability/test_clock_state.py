"""Unit tests for silvertine_streams.observability.clock_state: the drift fit, the
state decision, snapshots and the ``system`` events that report them (pure)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from silvertine_streams.events.codec import decode_event, encode_event
from silvertine_streams.events.model import Severity
from silvertine_streams.observability.clock_state import (
    ClockSnapshot,
    ClockState,
    clock_event,
    clock_state,
    estimate_drift_ppm,
)

SYNCED, UNSYNCED, DRIFTING = (
    ClockState.SYNCHRONISED,
    ClockState.UNSYNCHRONISED,
    ClockState.DRIFTING,
)
S = 1_000_000_000  # ns per second
T0 = 5_000_000 * S  # a monotonic_ns value of realistic size (~58 days of uptime)


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
