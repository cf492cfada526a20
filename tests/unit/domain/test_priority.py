"""Priority lanes: pause lower lanes for critical work, never starve them."""

from __future__ import annotations

from silvertine_streams.domain.priority import DEFAULT_LANES, LaneAction, LaneGate
from silvertine_streams.events import EventPriority


def test_default_lanes_put_orders_and_fills_first() -> None:
    assert DEFAULT_LANES["order"] is DEFAULT_LANES["fill"] is EventPriority.CRITICAL
    assert DEFAULT_LANES["market_data"] is EventPriority.NORMAL


def test_critical_work_pauses_and_its_absence_resumes() -> None:
    gate = LaneGate(max_pause_s=1.0)
    assert gate.decide(False, 0.0) is LaneAction.NONE
    assert gate.decide(True, 0.1) is LaneAction.PAUSE
    assert gate.decide(True, 0.2) is LaneAction.NONE
    assert gate.decide(False, 0.3) is LaneAction.RESUME
    assert gate.decide(False, 0.4) is LaneAction.NONE
    assert gate.pauses == 1


def test_a_paused_lane_is_elevated_after_max_pause_and_then_runs() -> None:
    gate = LaneGate(max_pause_s=0.05, min_run_s=0.01)
    assert gate.decide(True, 0.0) is LaneAction.PAUSE
    assert gate.decide(True, 0.049) is LaneAction.NONE
    assert gate.decide(True, 0.05) is LaneAction.RESUME
    # Critical work is still waiting, but the lane runs for min_run_s first.
    assert gate.decide(True, 0.055) is LaneAction.NONE
    assert gate.decide(True, 0.061) is LaneAction.PAUSE
    assert gate.elevations == 1
