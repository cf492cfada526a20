"""Unit tests for silvertine_streams.domain.flow (pure)."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from silvertine_streams.domain.flow import (
    CRITICAL_TYPES,
    DEFAULT_OVERFLOW,
    OVERFLOW_POLICIES,
    SHED_REASONS,
    OverflowPolicy,
    OverloadDetector,
    ProducerThrottle,
    policy_for,
    shed,
    stream_key_of,
)
from silvertine_streams.events.model import (
    EventType,
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    SystemEvent,
)
from silvertine_streams.settings import OverflowPolicy as SettingsOverflowPolicy


class Tick(NamedTuple):
    """A stand-in event: ``source`` and ``partition_key`` like the real ones."""

    n: int
    partition_key: str
    source: str = "feed"


def ticks(*symbols: str) -> list[Tick]:
    return [Tick(i, s) for i, s in enumerate(symbols)]


def ns(events: list[Tick]) -> list[int]:
    return [e.n for e in events]


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- policies ----------------------------------------------------------------


def test_policies_match_the_settings_literal() -> None:
    assert set(OVERFLOW_POLICIES) == {"block", "conflate", "drop_oldest", "drop_newest"}
    assert set(OVERFLOW_POLICIES) == set(SettingsOverflowPolicy.__args__)  # type: ignore[attr-defined]  # a Literal


def test_default_overflow_covers_every_event_type_and_blocks_critical_ones() -> None:
    assert set(DEFAULT_OVERFLOW) == {t.value for t in EventType}
    assert DEFAULT_OVERFLOW["market_data"] == "conflate"
    for event_type in ("order", "fill", "signal", "system"):
        assert DEFAULT_OVERFLOW[event_type] == "block"
    assert {"order", "fill"} == CRITICAL_TYPES


def test_policy_for_defaults_overrides_and_unknown_types() -> None:
    assert policy_for("market_data") == "conflate"
    assert policy_for("signal", {"signal": "drop_oldest"}) == "drop_oldest"
    assert policy_for("market_data", {"signal": "drop_oldest"}) == "conflate"
    assert policy_for("something_new") == "block"


@pytest.mark.parametrize("event_type", sorted(CRITICAL_TYPES))
@pytest.mark.parametrize("policy", ["conflate", "drop_oldest", "drop_newest"])
def test_policy_for_refuses_to_shed_critical_types(event_type: str, policy: str) -> None:
    with pytest.raises(ValueError, match="critical"):
        policy_for(event_type, {event_type: policy})  # type: ignore[dict-item]  # on purpose


def test_policy_for_rejects_unknown_policies() -> None:
    with pytest.raises(ValueError, match="unknown overflow policy 'drop_all'"):
        policy_for("signal", {"signal": "drop_all"})  # type: ignore[dict-item]  # on purpose


# --- shed --------------------------------------------------------------------


def test_block_never_sheds_even_far_over_capacity() -> None:
    events = ticks(*"ABCAB")
    result = shed(events, "block", capacity=1)
    assert result.kept == events and result.kept is not events
    assert result.shed == [] and result.reason == ""


def test_drop_oldest_keeps_the_newest_capacity_events() -> None:
    result = shed(ticks(*"ABCDE"), "drop_oldest", capacity=2)
    assert ns(result.kept) == [3, 4]
    assert ns(result.shed) == [0, 1, 2]
    assert result.reason == "dropped_oldest"


def test_drop_newest_keeps_the_first_capacity_events() -> None:
    result = shed(ticks(*"ABCDE"), "drop_newest", capacity=2)
    assert ns(result.kept) == [0, 1]
    assert ns(result.shed) == [2, 3, 4]
    assert result.reason == "dropped_newest"


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@pytest.mark.parametrize("size", [0, 2, 3])
def test_drop_policies_shed_nothing_within_capacity(policy: OverflowPolicy, size: int) -> None:
    events = ticks(*"ABC"[:size])
    result = shed(events, policy, capacity=3)
    assert result == (events, [], "")


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", []), ("drop_newest", [])])
def test_capacity_zero_sheds_everything(policy: OverflowPolicy, kept: list[int]) -> None:
    result = shed(ticks(*"AB"), policy, capacity=0)
    assert ns(result.kept) == kept
    assert ns(result.shed) == [0, 1]


def test_conflate_keeps_the_last_event_per_key_in_input_order() -> None:
    #                          0    1    2    3    4    5    6
    result = shed(ticks("A", "B", "A", "C", "B", "A", "D"), "conflate", capacity=100)
    assert ns(result.kept) == [3, 4, 5, 6]  # C, B, A, D: positions of their last events
    assert ns(result.shed) == [0, 1, 2]
    assert result.reason == "conflated"


def test_conflate_ignores_capacity_and_is_a_no_op_without_repeats() -> None:
    events = ticks(*"ABCD")
    assert shed(events, "conflate", capacity=1) == (events, [], "")
    assert shed([], "conflate", capacity=0) == ([], [], "")


def test_conflate_keys_on_source_and_symbol_by_default() -> None:
    events = [Tick(0, "AAPL", "feed-a"), Tick(1, "AAPL", "feed-b"), Tick(2, "AAPL", "feed-a")]
    result = shed(events, "conflate", capacity=10)
    assert ns(result.kept) == [1, 2]
    assert ns(result.shed) == [0]


def test_conflate_accepts_a_custom_key() -> None:
    events = [Tick(0, "AAPL", "feed-a"), Tick(1, "AAPL", "feed-b"), Tick(2, "MSFT", "feed-a")]
    result = shed(events, "conflate", capacity=10, key=lambda e: e.partition_key)
    assert ns(result.kept) == [1, 2]


def test_conflate_real_events_uses_partition_key() -> None:
    quotes = [
        MarketDataEvent(symbol=s, price=p, source="feed")
        for s, p in [("AAPL", 1.0), ("MSFT", 2.0), ("AAPL", 3.0)]
    ]
    gap = SystemEvent(kind="sequence_gap", source="engine")
    drift = SystemEvent(kind="clock_drift", source="engine")
    result = shed([*quotes, gap, drift, gap], "conflate", capacity=10)
    assert result.kept == [quotes[1], quotes[2], drift, gap]
    assert result.shed == [quotes[0], gap]
    assert stream_key_of(quotes[0]) == ("feed", "AAPL")


def test_shed_leaves_its_input_alone() -> None:
    events = ticks(*"AABB")
    before = list(events)
    for policy in OVERFLOW_POLICIES:
        shed(events, policy, capacity=1)
    assert events == before


def test_shed_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity"):
        shed([], "drop_oldest", capacity=-1)
    with pytest.raises(ValueError, match="unknown overflow policy"):
        shed(ticks("A"), "drop_all", capacity=5)  # type: ignore[arg-type]  # on purpose


def test_every_shedding_policy_has_a_reason() -> None:
    assert SHED_REASONS == {
        "conflate": "conflated",
        "drop_oldest": "dropped_oldest",
        "drop_newest": "dropped_newest",
    }


# --- overload detector -------------------------------------------------------


def test_detector_enters_above_high_and_leaves_below_low() -> None:
    clock = FakeClock()
    detector = OverloadDetector(high_lag=1000, low_lag=100, now=clock)
    assert detector.update(1000) is False  # at high: not yet
    assert detector.since is None
    clock.t = 105.0
    assert detector.update(1001) is True
    assert detector.since == 105.0
    clock.t = 107.5
    assert detector.overloaded_for_s() == 2.5
    assert detector.update(500) is True  # between the thresholds: stays
    assert detector.update(100) is True  # at low: stays
    assert detector.since == 105.0  # not restarted while overloaded
    assert detector.update(99) is False
    assert detector.since is None and detector.overloaded_for_s() == 0.0
    assert detector.update(500) is False  # between the thresholds: stays out
    assert detector.entered_total == 1
    assert detector.last_lag == 500


def test_detector_counts_each_overload() -> None:
    detector = OverloadDetector(high_lag=10, low_lag=5, now=FakeClock())
    for lag in [11, 4, 11, 11, 4, 20]:
        detector.update(lag)
    assert detector.entered_total == 3
    assert detector.overloaded


def test_detector_with_equal_thresholds() -> None:
    detector = OverloadDetector(high_lag=10, low_lag=10, now=FakeClock())
    assert [detector.update(lag) for lag in [10, 11, 10, 9, 10]] == [
        False,
        True,
        True,
        False,
        False,
    ]


@pytest.mark.parametrize(("high", "low"), [(10, 11), (10, -1), (-1, -2)])
def test_detector_rejects_bad_thresholds(high: int, low: int) -> None:
    with pytest.raises(ValueError, match="low_lag <= high_lag"):
        OverloadDetector(high_lag=high, low_lag=low)


# --- bounded buffer: block ---------------------------------------------------


def test_throttle_is_zero_within_bounds() -> None:
    throttle = ProducerThrottle(max_lag=1000, max_backlog=5000, min_wait_s=0.01, max_wait_s=1.0)
    assert throttle.wait_s(0, 0) == 0.0
    assert throttle.wait_s(1000, 5000) == 0.0


def test_throttle_grows_geometrically_from_min_to_max_and_is_capped() -> None:
    throttle = ProducerThrottle(max_lag=1000, max_backlog=0, min_wait_s=0.01, max_wait_s=1.0)
    assert throttle.wait_s(1001, 0) == pytest.approx(0.01, rel=0.01)
    assert throttle.wait_s(1500, 0) == pytest.approx(0.1)  # halfway: geometric mean
    assert throttle.wait_s(2000, 0) == 1.0
    assert throttle.wait_s(10**9, 0) == 1.0
    waits = [throttle.wait_s(lag, 0) for lag in range(0, 3000, 7)]
    assert waits == sorted(waits)
    assert all(w == 0.0 or 0.01 <= w <= 1.0 for w in waits)


def test_throttle_takes_the_worse_of_lag_and_backlog() -> None:
    throttle = ProducerThrottle(max_lag=1000, max_backlog=100, min_wait_s=0.01, max_wait_s=1.0)
    assert throttle.wait_s(0, 150) == pytest.approx(0.1)
    assert throttle.wait_s(1500, 0) == pytest.approx(0.1)
    assert throttle.wait_s(1500, 300) == 1.0
    assert throttle.overload(500, 150) == 1.5


def test_throttle_bound_zero_is_off() -> None:
    throttle = ProducerThrottle(max_lag=0, max_backlog=100)
    assert throttle.wait_s(10**9, 0) == 0.0
    assert throttle.wait_s(10**9, 300) == throttle.max_wait_s
    assert ProducerThrottle(max_lag=0, max_backlog=0).wait_s(10**9, 10**9) == 0.0


def test_throttle_saturation_point_is_configurable() -> None:
    throttle = ProducerThrottle(max_lag=100, max_backlog=0, max_wait_s=2.0, saturate_at=5.0)
    assert throttle.wait_s(300, 0) < 2.0
    assert throttle.wait_s(500, 0) == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_lag": -1, "max_backlog": 0},
        {"max_lag": 1, "max_backlog": 1, "min_wait_s": 0.0},
        {"max_lag": 1, "max_backlog": 1, "min_wait_s": 2.0, "max_wait_s": 1.0},
        {"max_lag": 1, "max_backlog": 1, "saturate_at": 1.0},
    ],
)
def test_throttle_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ProducerThrottle(**kwargs)  # type: ignore[arg-type]  # on purpose


def test_an_order_is_never_shed_by_its_default_policy() -> None:
    orders = [
        OrderEvent(order_id=f"o{i}", symbol="AAPL", side=OrderSide.BUY, quantity=1.0)
        for i in range(5)
    ]
    result = shed(orders, policy_for("order"), capacity=1)
    assert result.kept == orders and not result.shed
