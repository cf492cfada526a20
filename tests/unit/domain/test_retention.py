"""The trim point of a canonical log: retention bounds, clamped to every reader (pure)."""

from __future__ import annotations

import pytest

from silvertine_streams.domain.retention import (
    TrimPlan,
    age_minid,
    format_duration,
    higher,
    keep_after,
    parse_duration,
    parse_id,
    plan_trim,
)


def test_nothing_asked_trims_nothing() -> None:
    assert plan_trim(None, {"handler group a": "5-0"}) == TrimPlan(None, None)


def test_no_reader_trims_what_retention_asks() -> None:
    assert plan_trim("100-0", {}) == TrimPlan("100-0", None)


def test_a_lagging_reader_holds_the_trim_at_its_cursor() -> None:
    readers = {"handler group fast": keep_after("150-3"), "handler group slow": keep_after("40-7")}
    assert plan_trim("100-0", readers) == TrimPlan("40-8", "handler group slow")


def test_readers_ahead_of_retention_do_not_hold_it() -> None:
    assert plan_trim("100-0", {"handler group a": keep_after("100-0")}) == TrimPlan("100-0", None)


def test_a_reader_that_finished_nothing_holds_everything() -> None:
    plan = plan_trim("100-0", {"handler group new": keep_after("0-0")})
    assert plan == TrimPlan(None, "handler group new")


def test_ids_compare_as_integers_not_text() -> None:
    # As text "99-0" > "100-0"; as ids it is lower, so the reader holds the trim.
    assert plan_trim("100-0", {"consumer group g": "99-0"}) == TrimPlan("99-0", "consumer group g")
    assert parse_id("1700000000000-12") == (1_700_000_000_000, 12)
    assert parse_id("5") == (5, 0)


def test_keep_after_trims_the_cursor_and_nothing_later() -> None:
    assert keep_after("1700-0") == "1700-1"
    assert keep_after("1700-41") == "1700-42"


def test_age_minid_is_the_server_time_minus_the_age() -> None:
    assert age_minid(10_000, 3.5) == "6500-0"
    assert age_minid(1_000, 3600) == "0-0"


def test_higher_takes_the_bound_that_trims_more() -> None:
    assert higher("5-0", "40-1") == "40-1"
    assert higher(None, "40-1") == "40-1"
    assert higher("40-1", None) == "40-1"
    assert higher(None, None) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("30d", 2_592_000), ("2w", 1_209_600),
    ("0.5h", 1800),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0h", "-1h", "1y", "h", "1 hour"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="positive duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [90, 900, 3600, 2_592_000, 1_209_600, 1.5])
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
