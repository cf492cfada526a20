"""Handler groups as an operator sees them, the pure parts: who holds retention, and how much."""

from __future__ import annotations

import pytest

from silvertine_streams.cli.errors import REFUSED_EXIT, exit_status
from silvertine_streams.ops.handler_groups import (
    Follower,
    ForgetPlan,
    HandlerGroupRunning,
    followers_of,
    held_back,
    oldest,
)


def test_the_oldest_cursor_is_compared_as_an_entry_id_not_as_text() -> None:
    # "9-0" < "10-0" as ids, though not as strings.
    assert oldest({"a": "10-0", "b": "9-0", "c": "9-1"}) == {"b"}


def test_an_app_without_a_cursor_is_older_than_any_cursor() -> None:
    assert oldest({"a": "1-0", "new": None}) == {"new"}


def test_apps_tied_at_the_oldest_cursor_all_hold_it() -> None:
    assert oldest({"a": "5-0", "b": "5-0", "c": "6-0"}) == {"a", "b"}
    assert oldest({}) == set()


def test_held_back_is_an_app_s_lag_beyond_every_other_app_s() -> None:
    assert held_back({"old": 70, "mid": 30, "new": 0}) == {"old": 40, "mid": 0, "new": 0}


def test_a_lone_follower_holds_back_everything_it_has_not_finished() -> None:
    assert held_back({"only": 12}) == {"only": 12}


def test_two_apps_at_the_same_place_each_hold_back_nothing_alone() -> None:
    # Forgetting one of them lets retention trim nothing more: the other still needs it.
    assert held_back({"a": 8, "b": 8}) == {"a": 0, "b": 0}


def test_followers_of_a_log_carry_lag_retention_and_lease() -> None:
    rows = {"desk-b": ("100-0", 90), "desk-a": ("40-0", 30), "idle": ("120-0", 100)}
    found = followers_of("fill", 100, rows, {"desk-b": "host-1"})
    assert found == [
        Follower("desk-a", "fill", "40-0", 70, 60, True, None),
        Follower("desk-b", "fill", "100-0", 10, 0, False, "host-1"),
        Follower("idle", "fill", "120-0", 0, 0, False, None),
    ]


def test_an_oldest_follower_with_nothing_left_does_not_hold_retention() -> None:
    # Every entry is finished: retention may trim all of it, whatever the cursors say.
    found = followers_of("order", 5, {"a": ("5-0", 5), "b": ("5-0", 5)}, {})
    assert [f.holds_retention for f in found] == [False, False]


def test_a_follower_that_never_started_holds_the_whole_log() -> None:
    (found,) = followers_of("signal", 25, {"new": (None, 0)}, {})
    assert (found.cursor, found.lag, found.held_back, found.holds_retention) == (None, 25, 25, True)


def test_a_plan_sums_its_types_and_lists_them_in_engine_order() -> None:
    plan = ForgetPlan("desk", [
        Follower("desk", "fill", "1-0", 5, 3, True, None),
        Follower("desk", "market_data", "1-0", 9, 0, False, None),
    ], leftover=["order"])
    assert plan.types == ["market_data", "order", "fill"]
    assert (plan.lag, plan.held_back) == (14, 3)


def test_a_running_group_is_refused_in_one_line_with_the_refusal_status() -> None:
    error = HandlerGroupRunning("desk-a", "host-42")
    assert (error.app_id, error.holder) == ("desk-a", "host-42")
    message = str(error)
    assert "\n" not in message
    assert "lease:handlers:desk-a held by host-42" in message
    assert "SILVERTINE_APP_ID=desk-a" in message and "nothing was changed" in message
    assert exit_status(error) == REFUSED_EXIT == 2


@pytest.mark.parametrize("rows", [{"a": ("3-0", 1)}, {"a": ("3-0", 0), "b": ("7-0", 2)}])
def test_lag_is_never_negative(rows: dict[str, tuple[str | None, int]]) -> None:
    # A finished count above the length (a log trimmed by hand) reads as no lag.
    assert all(f.lag >= 0 for f in followers_of("fill", 0, rows, {}))
