"""Wiring a worker's engine into the Faust app: topics, batch loops, timers, mirrors, clock.

Everything Faust-specific about a worker is here; what the worker *does* is
built by :func:`~silvertine_streams.agents.composition.build_engine` and run
by :class:`~silvertine_streams.agents.pipeline.EventPipeline`, fed a batch at
a time by :class:`~silvertine_streams.agents.batch_loop.BatchLoop` (one app
task per event type; no Faust agent reads our topics, see ``batch_loop.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from silvertine_streams.agents.batch_loop import BatchLoop
from silvertine_streams.agents.composition import Engine, build_engine, replica_wait
from silvertine_streams.agents.holes import HoleFiller
from silvertine_streams.agents.intake import Intake, Mailbox
from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.events import EventType, SystemEvent, encode_event
from silvertine_streams.handlers import load_handler_setups
from silvertine_streams.ingress.mirror import IngressMirror
from silvertine_streams.kafka.envelopes import Envelope
from silvertine_streams.observability.clock import (
    ClockSnapshot,
    ClockState,
    ClockSync,
    clock_event,
)
from silvertine_streams.observability.metrics import (
    CLOCK_OFFSET,
    CLOCK_SYNCHRONISED,
    register_sink_retries,
    serve_metrics,
)
from silvertine_streams.redis.clients import COMMAND_TIMEOUT_S, redis_client
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.sinks.retention import Retention
from silvertine_streams.tables import sequence_table
from silvertine_streams.topics import DLQ_TOPIC, EVENT_TYPES, event_topic

if TYPE_CHECKING:
    from silvertine_streams.app import SilvertineApp

log = logging.getLogger(__name__)

REORDER_TICK_S = 0.01
"""How often reorder windows are checked for expiry when no message arrives."""


def register_agents(app: SilvertineApp) -> Engine:
    """Build the worker's engine and register its batch loops, timers and tasks on ``app``.

    ``SILVERTINE_EVENT_TYPES`` narrows the types: a worker group of its own for
    orders and fills gives them their own fetches, event loop and GIL, which the
    in-process lanes cannot (they only reorder work that already arrived).
    """
    settings = app.settings
    # A WAIT for replicas holds its connection up to its timeout: the socket must outlast it.
    redis = redis_client(settings, role="worker",
                         read_timeout_s=COMMAND_TIMEOUT_S + settings.redis_wait_timeout_ms / 1000)
    dead_letter_sink = DeadLetterSink(redis, retry_max_s=settings.sink_retry_max_s,
                                      max_len=settings.dlq_max_len,
                                      replica_wait=replica_wait(settings))
    outbox = Outbox(dead_letter_sink, *_kafka_senders(app))
    clock = _register_clock(app, outbox)
    now_s = (lambda: clock.now_ns() / 1e9) if clock is not None else time.time
    engine = build_engine(settings, redis, outbox, now_s)
    for setup in load_handler_setups(settings.handlers):
        setup(engine.registry)
    app.bus = engine.registry
    app.pipelines = engine.pipelines

    filler = HoleFiller(settings)
    controller = engine.controller
    # Critical lanes first: the fetch loop wakes their batch loops first.
    pipelines = sorted(engine.pipelines.items(), key=lambda item: not controller.is_critical(
        engine.lanes[item[1].event_type.value]))
    mailboxes = [Mailbox(topic_name) for topic_name, _ in pipelines]
    intake = Intake(mailboxes)
    loops = []
    for (topic_name, pipeline), mailbox in zip(pipelines, mailboxes, strict=True):
        type_name = pipeline.event_type.value
        app.batch_topics.append(app.topic(topic_name, key_serializer="raw",
                                          value_serializer="raw", partitions=settings.partitions))
        table = sequence_table(app, type_name, settings.partitions)
        critical = controller.is_critical(engine.lanes[type_name])
        loop = BatchLoop(app, pipeline, mailbox, intake, table, controller, critical,
                         engine.memory, filler)
        loops.append(loop)
        app.task(loop.run)
    app.intake = intake
    app.batch_loops = loops

    _register_handler_group(app, engine)
    _register_partition_hooks(app, engine)
    register_sink_retries(engine.log_sinks)
    _register_mirrors(app, redis, dead_letter_sink)
    _register_retention(app, redis)

    @app.task
    async def _serve_metrics() -> None:
        try:
            serve_metrics(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            log.warning("metrics not served on %s:%s: %s", settings.metrics_host,
                        settings.metrics_port, exc)

    return engine


def _kafka_senders(app: SilvertineApp) -> tuple[
        Callable[[SystemEvent], Any], Callable[[Sequence[DeadLetter]], Any]]:
    """The outbox's Kafka side: the ``system`` topic and the ``silvertine.dlq`` copy."""
    partitions = app.settings.partitions
    dlq_topic = app.topic(DLQ_TOPIC, key_serializer="raw", value_serializer="raw",
                          partitions=partitions)
    system_topic = app.topic(event_topic(EventType.SYSTEM.value), key_serializer="raw",
                             value_serializer="raw", partitions=partitions)

    async def send_system(event: SystemEvent) -> None:
        # Faust's send() only queues the message; the future it returns is the broker's ack.
        delivered = await system_topic.send(key=event.partition_key.encode(),
                                            value=encode_event(event))
        await delivered

    async def copy_dead_letters(letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            await dlq_topic.send(
                value=letter.payload,
                headers={"reason": letter.reason.encode(), "origin": letter.origin.encode()},
            )

    return send_system, copy_dead_letters


def _register_handler_group(app: SilvertineApp, engine: Engine) -> None:
    """Run the app's handler group here while this worker holds it; stop it gracefully.

    On a stop, Faust first stops the consumer (the batch loops finish their
    batches), then sends ``on_before_shutdown``: the group finishes the batch
    in hand and the rest of the logs up to their end at that moment, moves its
    cursors past them and gives its lease up, so nothing logged is handled
    twice or left behind for the next worker.
    """
    group = engine.handler_group
    stop_timeout_s = max(1.0, app.settings.stop_timeout_s / 2)

    app.task(group.run)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub wants signal=
    async def _stop_handler_group(sender: Any, **kwargs: Any) -> None:
        await group.stop(stop_timeout_s)

    @app.timer(1.0)
    async def _handler_lag() -> None:
        try:
            await group.update_lag()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.debug("handler lag not updated: %s", exc)


def _register_retention(app: SilvertineApp, redis: aioredis.Redis) -> None:
    """Trim the logs and sweep the DLQ index here while this worker holds the retention lease."""
    settings = app.settings
    retention = Retention(
        redis, f"{socket.gethostname()}-{os.getpid()}",
        max_age_s=settings.log_retention, max_entries=settings.log_max_entries,
        event_types=EVENT_TYPES, dedupe_window_s=settings.dedupe_window_s,
        interval_s=settings.retention_interval_s)
    app.task(retention.run)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub wants signal=
    async def _stop_retention(sender: Any, **kwargs: Any) -> None:
        retention.stop()


def _register_partition_hooks(app: SilvertineApp, engine: Engine) -> None:
    """Forget revoked partitions' state; expire reorder windows on a timer."""
    pipelines = engine.pipelines

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode's stub wants signal=
    async def _forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in revoked:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        for topic, partitions in by_topic.items():
            if topic in pipelines:
                pipelines[topic].forget_partitions(partitions)

    @app.timer(REORDER_TICK_S)
    async def _release_expired() -> None:
        # Reorder windows expire by time even when no message arrives.
        now = time.monotonic()
        for pipeline in pipelines.values():
            for state in pipeline.due_partitions(now):
                async with pipeline.lock:
                    await pipeline.expire(state)


def _register_clock(app: SilvertineApp, outbox: Outbox) -> ClockSync | None:
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
                lambda: asyncio.ensure_future(outbox.system(event)))

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


def _register_mirrors(
    app: SilvertineApp, redis: aioredis.Redis, dead_letter_sink: DeadLetterSink
) -> None:
    """Run one ingress mirror per event type in this worker (one holds each stream).

    They stop, and hand their leases back, when the app shuts down.
    """
    settings = app.settings
    consumer_name = f"{socket.gethostname()}-{os.getpid()}"

    async def send_envelope(envelope: Envelope) -> None:
        await app.producer.send_and_wait(
            envelope.topic, envelope.key, envelope.payload, envelope.partition, None, None)

    mirrors = []
    for type_name in settings.consumed_types:
        mirror = IngressMirror(
            redis, EventType(type_name), send_envelope, dead_letter_sink, consumer_name,
            settings.partitions, batch_max=settings.envelope_max_events,
            max_event_bytes=settings.max_event_bytes,
            max_message_bytes=settings.max_message_bytes,
        )
        mirrors.append(mirror)
        app.task(mirror.run)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub wants signal=
    async def _stop_mirrors(sender: Any, **kwargs: Any) -> None:
        # After the consumer drained and committed, while the producer still runs:
        # each mirror finishes its round (sent and acknowledged) and hands its lease
        # back, so another worker mirrors at once instead of after the lease expires.
        await asyncio.gather(*(mirror.stop() for mirror in mirrors))
