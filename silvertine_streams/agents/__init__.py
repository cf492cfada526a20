"""One Faust agent per event type, each a thin loop around :class:`EventPipeline`."""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from silvertine_streams.agents.pipeline import EventPipeline
from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.domain.handlers import HandlerDispatcher, HandlerRegistry, Subscription
from silvertine_streams.errors import ConfigError
from silvertine_streams.events import (
    Event,
    EventType,
    Severity,
    SystemEvent,
    encode_batch,
    encode_event,
)
from silvertine_streams.ingress.mirror import IngressMirror
from silvertine_streams.observability.metrics import (
    CIRCUIT_OPEN,
    register_sink_retries,
    serve_metrics,
)
from silvertine_streams.sinks.canonical_log import CanonicalLogSink
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.topics import DLQ_TOPIC, EVENT_TYPES, event_topic

if TYPE_CHECKING:
    from silvertine_streams.app import SilvertineApp

log = logging.getLogger(__name__)


def register_agents(app: SilvertineApp) -> None:
    """Register the pipeline agent of every event type, its table, and the shared sinks."""
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

    pipelines: dict[str, EventPipeline] = {}
    log_sinks: list[CanonicalLogSink] = []
    for type_name in EVENT_TYPES:
        event_type = EventType(type_name)
        log_sink = CanonicalLogSink(redis, type_name, window_s=settings.dedupe_window_s,
                                    retry_max_s=settings.sink_retry_max_s)
        log_sinks.append(log_sink)
        pipeline = EventPipeline(
            event_type,
            log_sink,
            dead_letter_sink,
            dispatcher,
            publish_system,
            publish_dead_letters,
            pending_system_events,
        )
        pipelines[event_topic(type_name)] = pipeline
        _register_agent(app, type_name, pipeline)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's stub wants signal=
    async def _forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in revoked:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, partitions in by_topic.items():
            if topic in pipelines:
                pipelines[topic].forget_partitions(partitions)

    register_sink_retries(log_sinks)
    _register_mirrors(app, redis, dead_letter_sink)

    @app.task
    async def _serve_metrics() -> None:
        try:
            serve_metrics(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            log.warning("metrics not served on 127.0.0.1:%s: %s", settings.metrics_port, exc)

    app.pipelines = pipelines  # type: ignore[attr-defined]  # for tests and the monitor


def _stored_marks(table: Any, key: str) -> dict[str, int]:
    """Return the high-water marks a partition's table record holds (empty if none)."""
    return dict(table.get(key) or {})


def _register_agent(app: SilvertineApp, type_name: str, pipeline: EventPipeline) -> None:
    settings = app.settings
    topic = app.topic(event_topic(type_name), key_serializer="raw", value_serializer="raw",
                      partitions=settings.partitions)
    # Sequence high-water marks, one record per partition written once per message:
    # one changelog record per event would halve throughput (DESIGN §5).
    table = app.Table(f"sequence-{type_name}", default=dict, partitions=settings.partitions,
                      key_type=str, value_type=dict)

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            key = str(message.partition)
            tracker = pipeline.tracker(message.partition, partial(_stored_marks, table, key))
            outcome = await pipeline.process(event.value, tracker, message.partition,
                                             message.offset, message.timestamp)
            if outcome.sequence_changes:
                table[key] = tracker.snapshot()

    agent.__name__ = f"pipeline_{type_name}"
    agent.__qualname__ = agent.__name__
    app.agent(topic, name=f"silvertine.pipeline.{type_name}")(agent)


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

    for type_name in EVENT_TYPES:
        mirror = IngressMirror(
            redis, EventType(type_name), send_envelope, dead_letter_sink, consumer_name,
            settings.partitions, batch_max=settings.envelope_max_events,
        )
        app.task(mirror.run)


def load_handler_setups(spec: str) -> list[Callable[[HandlerRegistry], object]]:
    """Import the ``module:function`` entries of ``SILVERTINE_HANDLERS``.

    Raises:
        ConfigError: an entry is malformed, its module does not import, or it
            names no callable.
    """
    setups: list[Callable[[HandlerRegistry], object]] = []
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        module_name, _, attribute = entry.partition(":")
        try:
            setup = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError("SILVERTINE_HANDLERS", entry,
                              f"module:function that imports ({exc})") from exc
        if not callable(setup):
            raise ConfigError("SILVERTINE_HANDLERS", entry, "module:function (a callable)")
        setups.append(setup)
    return setups
