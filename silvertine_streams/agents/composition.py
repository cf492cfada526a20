"""Building a worker's engine from :class:`Settings`: sinks, handlers, pipelines, lanes.

No Faust here: :mod:`silvertine_streams.agents.worker` wires what this builds
into the Faust app, and tests can build the same engine without one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from silvertine_streams.agents.lanes import LaneController
from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.agents.pipeline import EventPipeline
from silvertine_streams.agents.policies import lanes, pipeline_policies
from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.domain.flow import OverloadDetector
from silvertine_streams.events import EventPriority, EventType, Severity, SystemEvent
from silvertine_streams.handlers import HandlerDispatcher, HandlerRegistry, Subscription
from silvertine_streams.handlers.group import HandlerGroup
from silvertine_streams.handlers.positions import GroupPosition
from silvertine_streams.handlers.recent import RecentlyLogged
from silvertine_streams.observability.memory import MemoryGuard
from silvertine_streams.observability.metrics import CIRCUIT_OPEN, TypeMetrics
from silvertine_streams.settings import Settings
from silvertine_streams.sinks.canonical_log import (
    BULK_EVENTS_PER_CALL,
    MAX_EVENTS_PER_CALL,
    CanonicalLogSink,
)
from silvertine_streams.sinks.replication import ReplicaWait
from silvertine_streams.topics import event_topic

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Engine:
    """What one worker runs, built once from settings.

    Attributes:
        registry: where handler setups subscribe (``app.bus``).
        dispatcher: runs the registry's handlers with timeouts and circuits.
        handler_group: runs them on the canonical logs, from the app's durable
            position, while this worker holds the group.
        outbox: where dead letters and system events leave the pipelines.
        pipelines: the pipeline of each consumed type, by Kafka topic.
        log_sinks: the canonical-log sink of each consumed type.
        lanes: the lane of every event type.
        controller: lets critical lanes pre-empt lower ones.
        memory: slows intake near the worker's RSS limit.
    """

    registry: HandlerRegistry
    dispatcher: HandlerDispatcher
    handler_group: HandlerGroup
    outbox: Outbox
    pipelines: dict[str, EventPipeline]
    log_sinks: list[CanonicalLogSink]
    lanes: dict[str, EventPriority]
    controller: LaneController
    memory: MemoryGuard


def build_engine(settings: Settings, redis: aioredis.Redis, outbox: Outbox,
                 now_s: Callable[[], float] = time.time, holder: str | None = None) -> Engine:
    """Build the pipelines of every consumed type, with their sinks, handlers and lanes.

    Args:
        settings: the worker's settings.
        redis: the client the sinks and the handler group use.
        outbox: where the pipelines send dead letters and system events.
        now_s: corrected wall-clock seconds (the clock-sync service's, when it runs).
        holder: this worker's name in the handler group (default ``<host>-<pid>``).

    Raises:
        ConfigError: a per-type policy setting is invalid.
    """
    registry = HandlerRegistry()
    dispatcher = HandlerDispatcher(
        registry,
        timeout_s=settings.handler_timeout_s,
        failure_threshold=settings.circuit_failure_threshold,
        reset_s=settings.circuit_reset_s,
        on_transition=_circuit_alerts(outbox, settings.circuit_reset_s),
    )
    position = GroupPosition(redis, settings.app_id,
                             holder or f"{socket.gethostname()}-{os.getpid()}",
                             retry_max_s=settings.sink_retry_max_s)
    recent = RecentlyLogged(registry.has_handlers)
    handler_group = HandlerGroup(position, registry, dispatcher, settings.consumed_types,
                                 before_ack=outbox.send_queued, recent=recent)
    policies = pipeline_policies(settings)
    lane_of = lanes(settings)
    controller = LaneController(settings.lane_max_pause_s)
    pipelines: dict[str, EventPipeline] = {}
    log_sinks: list[CanonicalLogSink] = []
    for type_name in settings.consumed_types:
        critical = controller.is_critical(lane_of[type_name])
        log_sink = CanonicalLogSink(
            redis, type_name, window_s=settings.dedupe_window_s,
            retry_max_s=settings.sink_retry_max_s, replica_wait=replica_wait(settings),
            # Lower lanes write in short script calls, so an order's write that
            # arrives meanwhile waits behind one of them, not a whole batch.
            max_per_call=MAX_EVENTS_PER_CALL if critical else BULK_EVENTS_PER_CALL)
        log_sinks.append(log_sink)
        pipelines[event_topic(type_name)] = EventPipeline(
            EventType(type_name),
            policies[type_name],
            log_sink,
            outbox,
            overload=OverloadDetector(settings.overload_high_lag, settings.overload_low_lag),
            now_s=now_s,
            metrics=TypeMetrics.for_type(type_name),
            slice_break=None if critical else controller.slice_break,
            recent=recent,
        )
    return Engine(registry, dispatcher, handler_group, outbox, pipelines, log_sinks,
                  lane_of, controller, MemoryGuard(settings.memory_limit_mb * 1024 * 1024))


def replica_wait(settings: Settings) -> ReplicaWait | None:
    """The sinks' wait for Redis replicas, when ``SILVERTINE_REDIS_WAIT_REPLICAS`` asks for one."""
    if settings.redis_wait_replicas == 0:
        return None
    return ReplicaWait(settings.redis_wait_replicas, settings.redis_wait_timeout_ms)


def _circuit_alerts(outbox: Outbox, reset_s: float
                    ) -> Callable[[Subscription, CircuitState, CircuitState], None]:
    """A circuit-transition callback: a metric, and a ``circuit_open`` system event."""

    def on_transition(subscription: Subscription, old: CircuitState, new: CircuitState) -> None:
        CIRCUIT_OPEN.labels(subscription.name).set(1 if new is CircuitState.OPEN else 0)
        if new is CircuitState.OPEN:
            log.warning("handler %s circuit open", subscription.name)
            # The dispatcher calls this synchronously: the handler group sends it
            # (and waits for Kafka) before it acknowledges the batch.
            outbox.queue_system(SystemEvent(
                kind="circuit_open", severity=Severity.ERROR, symbol=subscription.name,
                message=f"handler {subscription.name} failed repeatedly; its circuit is open",
                details={"handler": subscription.name, "handler_id": subscription.handler_id,
                         "reset_s": reset_s},
                source="silvertine.handlers",
            ))

    return on_transition
