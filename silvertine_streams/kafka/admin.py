"""Declare our topics before anything produces (Tansu auto-creates with 4 partitions).

A topic that already exists with another partition count would send a symbol's
events to another partition than its history, breaking per-symbol order: we
refuse to run and name the topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from silvertine_streams.errors import ServerUnavailable, TopicMismatch
from silvertine_streams.kafka.clients import kafka_admin, kafka_consumer
from silvertine_streams.settings import Settings
from silvertine_streams.topics import all_topics

_TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(
    settings: Settings, topics: Iterable[str] | None = None, timeout_s: float = 15.0
) -> dict[str, int]:
    """Create missing topics with ``settings.partitions`` and check existing ones.

    Returns:
        topic name -> partition count, as the broker reports them.

    Raises:
        TopicMismatch: an existing topic has another partition count.
        ServerUnavailable: the broker did not answer within ``timeout_s``.
    """
    names = list(topics) if topics is not None else all_topics()
    admin = kafka_admin(settings, role="topics", request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        await admin.close()
        raise ServerUnavailable(str(settings.kafka_url), f"Kafka admin: {exc!r}") from exc
    try:
        existing = await _partition_counts(admin, names)
        missing = [n for n in names if n not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing]
            )
            for topic, code, *_ in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise ServerUnavailable(
                        str(settings.kafka_url), f"creating {topic} failed with error {code}"
                    )
            existing.update(await _partition_counts(admin, missing))
        for name in names:
            if existing.get(name) != settings.partitions:
                raise TopicMismatch(name, settings.partitions, existing.get(name, 0))
        return existing
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    known = set(await admin.list_topics())
    wanted = [n for n in names if n in known]
    if not wanted:
        return {}
    described = await admin.describe_topics(wanted)
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}


class GroupLag:
    """Reads a consumer group's lag: end offsets minus committed offsets.

    Uses a consumer that names the group but never subscribes or commits (it
    does not join the group); aiokafka's admin OffsetFetch is not understood by
    Tansu, the consumer's is. Started on first use; :meth:`close` stops it.
    """

    def __init__(self, settings: Settings, group_id: str) -> None:
        self._settings = settings
        self._group_id = group_id
        self._consumer: AIOKafkaConsumer | None = None

    async def lag(self, topics: Iterable[str]) -> int:
        """Return the messages of ``topics`` the group has not committed."""
        if self._consumer is None:
            consumer = kafka_consumer(self._settings, role="lag", group_id=self._group_id)
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in (consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return 0
        ends = await consumer.end_offsets(partitions)
        total = 0
        for tp in partitions:
            committed = await consumer.committed(tp)
            total += max(0, ends[tp] - (committed or 0))
        return total

    async def close(self) -> None:
        """Stop the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
