"""Per-type pipeline policies from settings (reorder windows, overload, timestamps)."""

from __future__ import annotations

from silvertine_streams.agents.pipeline import PipelinePolicy
from silvertine_streams.domain.flow import policy_for
from silvertine_streams.domain.priority import DEFAULT_LANES
from silvertine_streams.domain.reorder import DEFAULT_POLICIES, ReorderPolicy
from silvertine_streams.domain.timestamps import TimestampCheck
from silvertine_streams.events import EventPriority
from silvertine_streams.settings import Settings


def pipeline_policies(settings: Settings) -> dict[str, PipelinePolicy]:
    """Return the :class:`PipelinePolicy` of every event type.

    The per-type overrides were checked when the settings loaded, so nothing
    here refuses a value.
    """
    lane_of = lanes(settings)
    timestamps = TimestampCheck(settings.timestamp_future_tolerance_s, settings.timestamp_floor)
    policies = {}
    for event_type, default in DEFAULT_POLICIES.items():
        mode = settings.sequence_policies.get(event_type, default.mode)
        wait_s = (settings.reorder_wait_strict_s if mode == "strict"
                  else settings.reorder_wait_best_effort_s)
        policies[event_type] = PipelinePolicy(
            reorder=ReorderPolicy(mode, settings.reorder_max_held, wait_s),
            overflow=policy_for(event_type, settings.overflow_policies),
            keep_per_batch=settings.overload_keep_per_batch,
            timestamps=timestamps,
            max_event_bytes=settings.max_event_bytes,
            max_message_bytes=settings.max_message_bytes,
            # Only bulk lanes may overlap: an order's latency is its own write.
            overlap_writes=(settings.overlap_writes
                            and lane_of[event_type] is not EventPriority.CRITICAL),
        )
    return policies


def lanes(settings: Settings) -> dict[str, EventPriority]:
    """Return the lane of every event type: :data:`DEFAULT_LANES` under ``SILVERTINE_LANES``."""
    return {**DEFAULT_LANES, **settings.lanes}
