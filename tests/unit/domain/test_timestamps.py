"""Unit tests for silvertine_streams.domain.timestamps: plausibility of event timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from silvertine_streams.domain.timestamps import TimestampCheck

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
