"""Per-type pipeline policies derived from settings."""

from __future__ import annotations

from silvertine_streams.agents.policies import lanes, pipeline_policies
from silvertine_streams.domain.priority import DEFAULT_LANES
from silvertine_streams.events import EventPriority
from silvertine_streams.settings import load_settings


def test_overlapped_writes_are_off_unless_asked_for() -> None:
    policies = pipeline_policies(load_settings())
    assert not any(p.overlap_writes for p in policies.values())


def test_overlapped_writes_are_for_lower_lanes_only() -> None:
    policies = pipeline_policies(load_settings(overlap_writes=True))
    assert {t for t, p in policies.items() if p.overlap_writes} == {
        "market_data", "signal", "system"}
    # A type made critical by SILVERTINE_LANES awaits its own writes too.
    policies = pipeline_policies(load_settings(overlap_writes=True,
                                               lanes="market_data=critical"))
    assert not policies["market_data"].overlap_writes


def test_defaults_are_strict_for_orders_and_fills_and_conflate_market_data() -> None:
    policies = pipeline_policies(load_settings(reorder_wait_strict_s=3.0))
    assert {t: p.reorder.mode for t, p in policies.items()} == {
        "market_data": "best_effort", "order": "strict", "fill": "strict",
        "signal": "best_effort", "system": "best_effort"}
    assert policies["order"].reorder.max_wait_s == 3.0
    assert {t: p.overflow for t, p in policies.items()} == {
        "market_data": "conflate", "order": "block", "fill": "block",
        "signal": "block", "system": "block"}
    assert lanes(load_settings()) == DEFAULT_LANES


def test_per_type_overrides_win_over_the_defaults() -> None:
    settings = load_settings(sequence_policies="market_data=strict,order=best_effort",
                             overflow_policies="market_data=block,signal=drop_oldest",
                             lanes="market_data=low,signal=critical",
                             reorder_wait_strict_s=3.0, reorder_wait_best_effort_s=0.2)
    policies = pipeline_policies(settings)
    assert (policies["market_data"].reorder.mode, policies["market_data"].reorder.max_wait_s
            ) == ("strict", 3.0)
    assert (policies["order"].reorder.mode, policies["order"].reorder.max_wait_s
            ) == ("best_effort", 0.2)
    assert (policies["market_data"].overflow, policies["signal"].overflow) == (
        "block", "drop_oldest")
    assert lanes(settings) == {**DEFAULT_LANES, "market_data": EventPriority.LOW,
                               "signal": EventPriority.CRITICAL}
