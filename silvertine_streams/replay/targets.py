"""Where replayed events can go: a Kafka topic of the user's, or the subscribed handlers.

Neither target can reach the canonical log: the topic target refuses the
engine's own topics (``silvertine.<type>``, whose events the pipeline would log
again, ``silvertine.dlq`` and the app's internal ``<app_id>-…`` topics), and
the handler target calls handlers in this process, outside the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from silvertine_streams.errors import ConfigError, ServerUnavailable
from silvertine_streams.events import Event, encode_event
from silvertine_streams.handlers import HandlerDispatcher, HandlerRegistry, load_handler_setups
from silvertine_streams.kafka.clients import kafka_admin, kafka_producer
from silvertine_streams.replay.replayer import ReplayError
from silvertine_streams.settings import Settings, parse_handlers
from silvertine_streams.topics import DLQ_TOPIC, EVENT_TYPES, event_topic

_IN_FLIGHT = 2000
"""Sends awaited together: enough to batch, few enough to surface an error soon."""


def refuse_engine_topic(topic: str, app_id: str) -> None:
    """Raise :class:`ReplayError` when ``topic`` belongs to the engine.

    Replayed events produced to ``silvertine.<type>`` would be consumed by the
    workers and logged as new events (their metadata differs, so even the
    dedupe index would call them id conflicts).
    """
    if not topic or not topic.strip():
        raise ReplayError("--to topic: needs a topic name, e.g. topic:replay.orders")
    if topic in {event_topic(t) for t in EVENT_TYPES}:
        raise ReplayError(
            f"refusing to replay into {topic!r}: it is an event topic the workers consume, so "
            "every replayed event would be processed and logged again. Replay into a topic of "
            "your own (e.g. topic:replay.<type>) and point the consumer under test at it."
        )
    if topic == DLQ_TOPIC:
        raise ReplayError(f"refusing to replay into {topic!r}: it is the dead-letter topic")
    if topic.startswith(f"{app_id}-"):
        raise ReplayError(
            f"refusing to replay into {topic!r}: it is an internal topic of the app "
            f"{app_id!r} (table changelogs); writing there corrupts worker state"
        )


class TopicSink:
    """Produce each replayed event (JSON, key = its partition key) to a topic of the user's.

    Use as an async context manager: the topic is created when missing (with
    ``settings.partitions``), sends are batched, and leaving the block waits
    until Kafka has every event.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        """Check the target; no I/O until the block is entered.

        Raises:
            ReplayError: ``topic`` is one of the engine's topics.
        """
        refuse_engine_topic(topic, settings.app_id)
        self.topic = topic
        self.sent = 0
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> TopicSink:
        await self._ensure_topic()
        producer = kafka_producer(self._settings, role="replay", linger_ms=5)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            await producer.stop()
            raise ServerUnavailable(str(self._settings.kafka_url), repr(exc)) from exc
        self._producer = producer
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self._flush()
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def __call__(self, event: Event) -> None:
        """Queue one event; every few thousand, wait for Kafka to confirm them."""
        assert self._producer is not None, "use TopicSink as an async context manager"
        future = await self._producer.send(
            self.topic, value=encode_event(event), key=event.partition_key.encode()
        )
        self._pending.append(future)
        if len(self._pending) >= _IN_FLIGHT:
            await self._flush()

    async def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
            self.sent += len(pending)

    async def _ensure_topic(self) -> None:
        admin = kafka_admin(self._settings, role="replay")
        try:
            await admin.start()
            if self.topic not in set(await admin.list_topics()):
                with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile: fine
                    await admin.create_topics([NewTopic(
                        self.topic, self._settings.partitions, self._settings.replication_factor
                    )])
        except (KafkaError, OSError) as exc:
            raise ServerUnavailable(str(self._settings.kafka_url), repr(exc)) from exc
        finally:
            await admin.close()


class HandlerSink:
    """Call the subscribed handlers with each replayed event, isolated as in a worker.

    Each event goes through a :class:`HandlerDispatcher` (priorities, timeouts,
    circuit breakers) built from the same ``module:function`` setups a worker
    runs (``SILVERTINE_HANDLERS``). Handler failures are counted, never raised.

    Attributes:
        calls: handler calls per handler name.
        failures: failed or timed-out calls per handler name.
    """

    def __init__(
        self,
        setups: Iterable[Callable[[HandlerRegistry], object]],
        timeout_s: float = 1.0,
        failure_threshold: int = 5,
        reset_s: float = 10.0,
    ) -> None:
        self.registry = HandlerRegistry()
        for setup in setups:
            setup(self.registry)
        self._dispatcher = HandlerDispatcher(
            self.registry, timeout_s=timeout_s, failure_threshold=failure_threshold,
            reset_s=reset_s,
        )
        self.calls: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings, spec: str | None = None) -> HandlerSink:
        """Build from ``SILVERTINE_HANDLERS`` (or ``spec``) and the handler settings.

        Args:
            settings: the handler settings, and ``SILVERTINE_HANDLERS`` when ``spec`` is None.
            spec: ``--handlers`` from the command line, comma-separated ``module:function``.

        Raises:
            ConfigError: a ``module:function`` entry is malformed or does not import.
            ReplayError: no handler setup is configured.
        """
        entries = settings.handlers
        if spec is not None:
            try:
                entries = parse_handlers(spec)
            except ValueError as exc:
                raise ConfigError("--handlers", spec, str(exc)) from exc
        setups = load_handler_setups(entries)
        if not setups:
            raise ReplayError(
                "--to handlers needs handler setups: set SILVERTINE_HANDLERS or pass "
                "--handlers module:function"
            )
        return cls(setups, settings.handler_timeout_s, settings.circuit_failure_threshold,
                   settings.circuit_reset_s)

    async def __call__(self, event: Event) -> None:
        """Dispatch one event to the handlers of its type."""
        report = await self._dispatcher.dispatch([event], event.event_type.value)
        for stats in report.handlers.values():
            self.calls[stats.name] = self.calls.get(stats.name, 0) + stats.calls
            failed = stats.failures + stats.timeouts
            if failed:
                self.failures[stats.name] = self.failures.get(stats.name, 0) + failed
