"""Per-type pipeline policies from settings (reorder windows, overload, timestamps)."""

from __future__ import annotations

from typing import cast

from silvertine_streams.agents.pipeline import PipelinePolicy
from silvertine_streams.domain.flow import OverflowPolicy, policy_for
from silvertine_streams.domain.priority import parse_lanes
from silvertine_streams.domain.reorder import DEFAULT_POLICIES, ReorderPolicy
from silvertine_streams.domain.timestamps import TimestampCheck
from silvertine_streams.errors import ConfigError
from silvertine_streams.events import EventPriority
from silvertine_streams.settings import Settings, type_map

_MODES = ("strict", "best_effort")


def pipeline_policies(settings: Settings) -> dict[str, PipelinePolicy]:
    """Return the :class:`PipelinePolicy` of every event type.

    Raises:
        ConfigError: a per-type override names an unknown mode, lane or policy,
            or a shedding policy for orders or fills (they always block).
    """
    modes = type_map(settings.sequence_policies)
    for event_type, mode in modes.items():
        if mode not in _MODES:
            raise ConfigError("SILVERTINE_SEQUENCE_POLICIES", f"{event_type}={mode}",
                              " or ".join(_MODES))
    overflow = type_map(settings.overflow_policies)
    lane_of = lanes(settings)
    timestamps = TimestampCheck(settings.timestamp_future_tolerance_s, settings.timestamp_floor)
    policies = {}
    for event_type, default in DEFAULT_POLICIES.items():
        mode = modes.get(event_type, default.mode)
        wait_s = (settings.reorder_wait_strict_s if mode == "strict"
                  else settings.reorder_wait_best_effort_s)
        try:
            overflow_policy = policy_for(event_type, cast(dict[str, OverflowPolicy], overflow))
        except ValueError as exc:
            raise ConfigError("SILVERTINE_OVERFLOW_POLICIES", settings.overflow_policies,
                              str(exc)) from exc
        policies[event_type] = PipelinePolicy(
            reorder=ReorderPolicy(mode, settings.reorder_max_held, wait_s),  # type: ignore[arg-type]  # checked above
            overflow=overflow_policy,
            keep_per_batch=settings.overload_keep_per_batch,
            timestamps=timestamps,
            # Only bulk lanes may overlap: an order's latency is its own write.
            overlap_writes=(settings.overlap_writes
                            and lane_of[event_type] is not EventPriority.CRITICAL),
        )
    return policies


def lanes(settings: Settings) -> dict[str, EventPriority]:
    """Return the lane of every event type.

    Raises:
        ConfigError: ``SILVERTINE_LANES`` names an unknown priority.
    """
    try:
        return parse_lanes(settings.lanes)
    except ValueError as exc:
        raise ConfigError("SILVERTINE_LANES", settings.lanes, str(exc)) from exc
