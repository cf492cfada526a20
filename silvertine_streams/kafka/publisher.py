"""Publish events into the engine, by Kafka (batch envelopes) or the Redis ingress stream.

Example:
    async with Publisher(settings) as publisher:
        await publisher.publish(MarketDataEvent(symbol="AAPL", price=189.5))
        await publisher.publish_many(ticks)            # envelopes per partition
        await publisher.publish_to_ingress(order)      # XADD events:order
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import TracebackType

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from silvertine_streams.domain.flow import ProducerThrottle
from silvertine_streams.errors import EventTooLarge, ServerUnavailable
from silvertine_streams.events import Event, encode_event
from silvertine_streams.kafka.admin import GroupLag
from silvertine_streams.kafka.clients import kafka_producer
from silvertine_streams.kafka.envelopes import group_envelopes, pack_envelopes, partition_for
from silvertine_streams.redis.clients import redis_client
from silvertine_streams.settings import Settings
from silvertine_streams.topics import EVENT_TYPES, event_topic, ingress_stream

__all__ = ["Publisher", "group_envelopes", "partition_for"]  # the last two: older imports


class Publisher:
    """Sends events to ``silvertine.<type>`` (Kafka) or ``events:<type>`` (Redis).

    Producers may set ``sequence`` per (source, symbol); when they don't, the
    engine assigns one. Delivery is at-least-once: a retried publish may write an
    event twice, and the engine's idempotent log keeps it once.
    """

    def __init__(self, settings: Settings, *, check_every_s: float = 1.0) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._redis: aioredis.Redis | None = None
        self._group_lag = GroupLag(settings, settings.app_id)
        self._throttle = ProducerThrottle(settings.publish_max_lag, settings.publish_max_backlog)
        self._check_every_s = check_every_s
        self._checked_at = -check_every_s
        self._wait_s = 0.0
        self.throttled_s = 0.0
        """Seconds this publisher has waited for the engine to catch up."""

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _kafka(self) -> AIOKafkaProducer:
        if self._producer is None:
            # acks=all, and no idempotence (Tansu refuses InitProducerId): the
            # engine's log absorbs duplicates from retries instead.
            producer = kafka_producer(
                self._settings, role="publisher", linger_ms=1, max_request_size=16 * 1024 * 1024
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                await producer.stop()
                raise ServerUnavailable(str(self._settings.kafka_url), repr(exc)) from exc
            self._producer = producer
        return self._producer

    def _redis_client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = redis_client(self._settings, role="publisher")
        return self._redis

    async def wait_for_capacity(self) -> float:
        """Wait while the engine is behind (consumer lag or ingress backlog over bounds).

        The engine's lag and the Redis ingress backlog are read at most every
        ``check_every_s``; above ``SILVERTINE_PUBLISH_MAX_LAG`` /
        ``SILVERTINE_PUBLISH_MAX_BACKLOG`` the publisher waits (an async wait,
        never an error). Every publish calls it.

        Returns:
            the seconds waited.
        """
        if not (self._settings.publish_max_lag or self._settings.publish_max_backlog):
            return 0.0
        now = time.monotonic()
        if now - self._checked_at >= self._check_every_s:
            self._checked_at = now
            lag = await self._engine_lag() if self._settings.publish_max_lag else 0
            backlog = (await self._backlog_or_zero()) if self._settings.publish_max_backlog else 0
            self._wait_s = self._throttle.wait_s(lag, backlog)
        if self._wait_s:
            await asyncio.sleep(self._wait_s)
            self.throttled_s += self._wait_s
        return self._wait_s

    async def ingress_backlog(self) -> int:
        """Entries waiting in the Redis ingress streams, over all event types."""
        pipe = self._redis_client().pipeline(transaction=False)
        for event_type in EVENT_TYPES:
            pipe.xlen(ingress_stream(event_type))
        return sum(await pipe.execute())

    async def _backlog_or_zero(self) -> int:
        try:
            return await self.ingress_backlog()
        except (RedisError, OSError):
            return 0  # Redis away: never stop a Kafka-path publisher over a monitoring read

    async def _engine_lag(self) -> int:
        """Messages the worker group has not committed yet, over all event topics."""
        try:
            return await self._group_lag.lag(event_topic(t) for t in EVENT_TYPES)
        except (KafkaError, OSError):
            return 0  # lag unknown: do not hold producers back on a monitoring failure

    async def publish(self, event: Event) -> None:
        """Send one event to its topic, keyed by symbol; return once Kafka has it.

        Raises:
            EventTooLarge: the event's JSON is over ``SILVERTINE_MAX_EVENT_BYTES``
                (nothing is sent).
        """
        value = self._encoded(event)
        await self.wait_for_capacity()
        producer = await self._kafka()
        await producer.send_and_wait(
            event_topic(event.event_type.value), value=value, key=event.partition_key.encode())

    async def publish_many(self, events: Sequence[Event]) -> int:
        """Send events as batch envelopes (one Kafka message per partition chunk).

        Returns:
            the number of Kafka messages sent.

        Raises:
            EventTooLarge: an event's JSON is over ``SILVERTINE_MAX_EVENT_BYTES``
                (nothing is sent).
        """
        settings = self._settings
        envelopes, oversize = pack_envelopes(
            events, settings.partitions, settings.envelope_max_events,
            settings.max_event_bytes, settings.max_message_bytes)
        if oversize:
            first = oversize[0]
            raise EventTooLarge(first.event.event_id, first.size, settings.max_event_bytes)
        await self.wait_for_capacity()
        producer = await self._kafka()
        futures = [
            await producer.send(e.topic, value=e.payload, key=e.key, partition=e.partition)
            for e in envelopes
        ]
        await asyncio.gather(*futures)
        return len(futures)

    async def publish_to_ingress(self, event: Event) -> bytes:
        """XADD one event to ``events:<type>`` (field ``event``); return the entry id."""
        value = self._encoded(event)
        await self.wait_for_capacity()
        entry_id = await self._redis_client().xadd(
            ingress_stream(event.event_type.value), {"event": value})
        return entry_id if isinstance(entry_id, bytes) else entry_id.encode()

    async def publish_many_to_ingress(self, events: Sequence[Event]) -> list[bytes]:
        """XADD several events in one pipelined round trip; return their entry ids."""
        values = [self._encoded(event) for event in events]
        await self.wait_for_capacity()
        pipe = self._redis_client().pipeline(transaction=False)
        for event, value in zip(events, values, strict=True):
            pipe.xadd(ingress_stream(event.event_type.value), {"event": value})
        return list(await pipe.execute())

    def _encoded(self, event: Event) -> bytes:
        """The event's JSON, refused when it is over the per-event bound."""
        value = encode_event(event)
        if len(value) > self._settings.max_event_bytes:
            raise EventTooLarge(event.event_id, len(value), self._settings.max_event_bytes)
        return value

    async def close(self) -> None:
        """Flush and close the Kafka producer and the Redis client."""
        await self._group_lag.close()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
