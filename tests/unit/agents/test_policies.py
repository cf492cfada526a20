"""Per-type pipeline policies derived from settings."""

from __future__ import annotations

from silvertine_streams.agents.policies import pipeline_policies
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
