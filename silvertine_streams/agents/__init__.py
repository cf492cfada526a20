"""One Faust agent per event type, each a thin loop around :class:`EventPipeline`."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from silvertine_streams.agents.holes import HoleFiller, as_faust_message
from silvertine_streams.agents.lanes import LaneController
from silvertine_streams.agents.pipeline import EventPipeline, PartitionState
from silvertine_streams.agents.policies import lanes, pipeline_policies
from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.domain.flow import OverloadDetector
from silvertine_streams.domain.offsets import OffsetAction
from silvertine_streams.events import (
    Event,
    EventPriority,
    EventType,
    Severity,
    SystemEvent,
    encode_batch,
    encode_event,
)
from silvertine_streams.handlers import (
    HandlerDispatcher,
    HandlerRegistry,
    Subscription,
    load_handler_setups,
)
from silvertine_streams.ingress.mirror import IngressMirror
from silvertine_streams.observability.clock import (
    ClockSnapshot,
    ClockState,
    ClockSync,
    clock_event,
)
from silvertine_streams.observability.memory import MemoryGuard
from silvertine_streams.observability.metrics import (
    CIRCUIT_OPEN,
    CLOCK_OFFSET,
    CLOCK_SYNCHRONISED,
    MEMORY_THROTTLED,
    OFFSET_HOLES,
    TypeMetrics,
    register_sink_retries,
    serve_metrics,
)
from silvertine_streams.sinks.canonical_log import CanonicalLogSink
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.topics import DLQ_TOPIC, event_topic

if TYPE_CHECKING:
    from silvertine_streams.app import SilvertineApp

log = logging.getLogger(__name__)


def register_agents(app: SilvertineApp) -> None:
    """Register the pipeline agent of every consumed event type, its table, and the sinks.

    ``SILVERTINE_EVENT_TYPES`` narrows the types: a worker group of its own for
    orders and fills gives them their own fetches, event loop and GIL, which the
    in-process lanes cannot (they only reorder work that already arrived).
    """
    settings = app.settings
    redis = aioredis.Redis.from_url(
        str(settings.redis_url), socket_timeout=5.0, socket_connect_timeout=5.0
    )
    registry = HandlerRegistry()
    pending_system_events: list[SystemEvent] = []

    def on_circuit_transition(
        subscription: Subscription, old: CircuitState, new: CircuitState
    ) -> None:
        CIRCUIT_OPEN.labels(subscription.name).set(1 if new is CircuitState.OPEN else 0)
        if new is CircuitState.OPEN:
            log.warning("handler %s circuit open", subscription.name)
            pending_system_events.append(SystemEvent(
                kind="circuit_open", severity=Severity.ERROR, symbol=subscription.name,
                message=f"handler {subscription.name} failed repeatedly; its circuit is open",
                details={"handler": subscription.name, "handler_id": subscription.handler_id,
                         "reset_s": settings.circuit_reset_s},
                source="silvertine.handlers",
            ))

    dispatcher = HandlerDispatcher(
        registry,
        timeout_s=settings.handler_timeout_s,
        failure_threshold=settings.circuit_failure_threshold,
        reset_s=settings.circuit_reset_s,
        on_transition=on_circuit_transition,
    )
    app.bus = registry  # type: ignore[attr-defined]  # the public subscribe() surface
    for setup in load_handler_setups(settings.handlers):
        setup(registry)
    dead_letter_sink = DeadLetterSink(redis, retry_max_s=settings.sink_retry_max_s)
    dlq_topic = app.topic(DLQ_TOPIC, key_serializer="raw", value_serializer="raw",
                          partitions=settings.partitions)
    system_topic = app.topic(event_topic(EventType.SYSTEM.value), key_serializer="raw",
                             value_serializer="raw", partitions=settings.partitions)

    async def publish_system(event: SystemEvent) -> None:
        await system_topic.send(key=event.partition_key.encode(), value=encode_event(event))

    async def publish_dead_letters(letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            await dlq_topic.send(
                value=letter.payload,
                headers={"reason": letter.reason.encode(), "origin": letter.origin.encode()},
            )

    clock = _register_clock(app, publish_system)
    now_s = (lambda: clock.now_ns() / 1e9) if clock is not None else time.time
    policies = pipeline_policies(settings)
    lane_of = lanes(settings)
    controller = LaneController(settings.lane_max_pause_s)
    memory = MemoryGuard(settings.memory_limit_mb * 1024 * 1024)
    filler = HoleFiller(settings)
    pipelines: dict[str, EventPipeline] = {}
    log_sinks: list[CanonicalLogSink] = []
    for type_name in settings.consumed_types:
        event_type = EventType(type_name)
        log_sink = CanonicalLogSink(redis, type_name, window_s=settings.dedupe_window_s,
                                    retry_max_s=settings.sink_retry_max_s)
        log_sinks.append(log_sink)
        critical = controller.is_critical(lane_of[type_name])
        pipeline = EventPipeline(
            event_type,
            policies[type_name],
            log_sink,
            dead_letter_sink,
            dispatcher,
            publish_system,
            publish_dead_letters,
            overload=OverloadDetector(settings.overload_high_lag, settings.overload_low_lag),
            now_s=now_s,
            pending_system_events=pending_system_events,
            slice_break=None if critical else controller.slice_break,
        )
        pipelines[event_topic(type_name)] = pipeline
        _register_agent(app, type_name, pipeline, controller, lane_of[type_name], memory,
                        filler)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's stub wants signal=
    async def _forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in revoked:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, partitions in by_topic.items():
            if topic in pipelines:
                pipelines[topic].forget_partitions(partitions)

    @app.timer(0.01)
    async def _release_expired() -> None:
        # Reorder windows expire by time even when no message arrives.
        now = time.monotonic()
        for pipeline in pipelines.values():
            for state in pipeline.due_partitions(now):
                async with pipeline.lock:
                    await pipeline.expire(state)


    register_sink_retries(log_sinks)
    _register_mirrors(app, redis, dead_letter_sink)

    @app.task
    async def _serve_metrics() -> None:
        try:
            serve_metrics(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            log.warning("metrics not served on 127.0.0.1:%s: %s", settings.metrics_port, exc)

    app.pipelines = pipelines  # type: ignore[attr-defined]  # for tests and the monitor


def _register_clock(app: SilvertineApp, publish_system: Callable[[SystemEvent], Any]
                    ) -> ClockSync | None:
    """Run NTP clock sync in this worker when ``SILVERTINE_CLOCK_SERVERS`` is set."""
    settings = app.settings
    servers = settings.clock_servers
    if not servers:
        CLOCK_SYNCHRONISED.set(0)
        return None
    loop_holder: list[asyncio.AbstractEventLoop] = []

    def on_change(old: ClockState | None, new: ClockState, snapshot: ClockSnapshot) -> None:
        # Runs on the clock thread: hand the event to the worker's loop.
        CLOCK_SYNCHRONISED.set(1 if new is ClockState.SYNCHRONISED else 0)
        CLOCK_OFFSET.set(snapshot.offset_s)
        if loop_holder:
            event = clock_event(snapshot)
            loop_holder[0].call_soon_threadsafe(
                lambda: asyncio.ensure_future(publish_system(event)))

    clock = ClockSync(servers, interval_s=settings.clock_interval_s,
                      timeout_s=settings.clock_timeout_s,
                      max_offset_ms=settings.clock_max_offset_ms,
                      stale_after_s=settings.clock_stale_after_s, on_change=on_change)

    @app.task
    async def _start_clock() -> None:
        loop_holder.append(asyncio.get_running_loop())
        clock.start()

    @app.timer(1.0)
    async def _clock_metrics() -> None:
        CLOCK_OFFSET.set(clock.snapshot().offset_s)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub wants signal=
    async def _stop_clock(sender: Any, **kwargs: Any) -> None:
        clock.stop()

    return clock


def _stored_marks(table: Any, key: str) -> dict[str, int]:
    """Return the high-water marks a partition's table record holds (empty if none)."""
    return dict(table.get(key) or {})


def _register_agent(
    app: SilvertineApp,
    type_name: str,
    pipeline: EventPipeline,
    controller: LaneController,
    lane: EventPriority,
    memory: MemoryGuard,
    filler: HoleFiller,
) -> None:
    settings = app.settings
    topic = app.topic(event_topic(type_name), key_serializer="raw", value_serializer="raw",
                      partitions=settings.partitions)
    # Sequence high-water marks, one record per partition written once per message:
    # one changelog record per event would halve throughput (DESIGN §5).
    # No key_type/value_type (Faust then uses JSON): with value_type=dict Faust takes
    # dict for a model class, and recovery fails ("type object 'dict' has no
    # attribute 'from_data'").
    table = app.Table(f"sequence-{type_name}", default=dict, partitions=settings.partitions)
    critical = controller.is_critical(lane)
    lag_gauge = TypeMetrics.for_type(type_name).lag
    held_gauge = TypeMetrics.for_type(type_name).reorder_held

    async def agent(stream: Any) -> None:
        if critical:
            controller.watch(getattr(stream.channel, "queue", None))
        # Manual acks: a message is acknowledged only when all its events are
        # logged, including those a reorder window held back.
        async for event in stream.noack().events():
            message = event.message
            key = str(message.partition)
            state = pipeline.partition(
                message.partition, partial(_stored_marks, table, key),
                partial(_committed_offset, app, message.tp), message.tp)
            if not await _in_turn(app, pipeline, state, event, filler):
                continue
            if critical:
                controller.in_flight += 1
            else:
                await controller.yield_to_critical()
            if memory.should_throttle():
                await _relieve_memory()
            highwater = app.consumer.highwater(message.tp) or 0
            lag = max(0, highwater - message.offset - 1)
            ack = event.ack
            try:
                async with pipeline.lock:
                    outcome = await pipeline.process(
                        event.value, state, message.partition, message.offset, ack,
                        message.timestamp, lag)
            finally:
                if critical:
                    controller.in_flight -= 1
            # Written on every message that moved a mark (expiries by the timer
            # cannot write: Faust ties table writes to the current message).
            if outcome.sequence_changes or state.unsaved:
                table[key] = state.tracker.snapshot()
                state.unsaved = False
            lag_gauge.set(lag)
            held_gauge.set(outcome.held)

    agent.__name__ = f"pipeline_{type_name}"
    agent.__qualname__ = agent.__name__
    app.agent(topic, name=f"silvertine.pipeline.{type_name}")(agent)


async def _in_turn(
    app: SilvertineApp, pipeline: EventPipeline, state: PartitionState, event: Any,
    filler: HoleFiller,
) -> bool:
    """Whether to process ``event``; fill a hole before it first.

    A redelivery of a processed message is acknowledged and dropped. A message
    that arrives before its predecessors (a hole) is processed after them: the
    missing offsets are read directly (:mod:`silvertine_streams.agents.holes`).
    If they cannot be read, the message is processed anyway and the consumer
    never commits past the hole (``app.py``), so the missing messages are read
    again after the next restart rather than lost.
    """
    message = event.message
    action = state.offsets.check(message.offset)
    if action is OffsetAction.PROCESS:
        return True
    if action is OffsetAction.SKIP:
        event.ack()
        return False
    OFFSET_HOLES.inc()
    start = state.offsets.next_offset
    assert start is not None
    log.warning("%s delivered offset %s before %s; reading the hole directly",
                message.tp, message.offset, start)
    records = await filler.fetch(message.tp.topic, message.tp.partition, start,
                                 message.offset)
    for record in records:
        filled = as_faust_message(record, message.tp)
        async with pipeline.lock:
            await pipeline.process(record.value, state, record.partition, record.offset,
                                   partial(filled.ack, app.consumer),
                                   record.timestamp / 1000.0, 0)
    if len(records) < message.offset - start:
        log.error("%s: read %s of the %s missing messages; commits stay before the hole",
                  message.tp, len(records), message.offset - start)
    state.offsets.next_offset = message.offset + 1
    return True


def _committed_offset(app: SilvertineApp, tp: Any) -> int | None:
    """The offset the group resumes this partition at, as Faust knows it (None: unknown)."""
    # Faust records it when it seeks to the committed offsets (a private dict).
    committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
    return int(committed) if committed is not None else None


async def _relieve_memory() -> None:
    """Near the memory limit: collect garbage and slow intake a little (never stop)."""
    MEMORY_THROTTLED.inc()
    gc.collect()
    await asyncio.sleep(0.01)


def _register_mirrors(
    app: SilvertineApp, redis: aioredis.Redis, dead_letter_sink: DeadLetterSink
) -> None:
    """Run one ingress mirror per event type in this worker (one holds each stream)."""
    settings = app.settings
    consumer_name = f"{socket.gethostname()}-{os.getpid()}"

    async def send_envelope(topic: str, partition: int, events: Sequence[Event]) -> None:
        await app.producer.send_and_wait(
            topic, events[0].partition_key.encode(), encode_batch(events), partition,
            None, None,
        )

    for type_name in settings.consumed_types:
        mirror = IngressMirror(
            redis, EventType(type_name), send_envelope, dead_letter_sink, consumer_name,
            settings.partitions, batch_max=settings.envelope_max_events,
        )
        app.task(mirror.run)
