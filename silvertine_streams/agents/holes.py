"""Read the messages Faust skipped, so a partition is processed without holes.

After a rebalance or restart Faust can deliver a partition's later offsets
first and never deliver the ones in between: records fetched before its seek to
the committed offsets, and, until ``app.py``'s ``_FlowControl``, records its
recovery emptied from the agents' buffers after the consumer had fetched past
them (when those were a partition's last messages no later offset revealed
the jump, so this filler never ran: the flow-control fix closes that case).
The batch loop notices the jump (domain/offsets.py) and asks :class:`HoleFiller`
for the missing offsets: a group-less aiokafka consumer reads exactly that
range, and the loop processes it before the message that jumped, in the same
batch. The filled messages are acknowledged in Faust's bookkeeping like any
other, so commits advance over them as over any processed message.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from silvertine_streams.kafka.clients import kafka_consumer
from silvertine_streams.settings import Settings


class HoleFiller:
    """Fetches an offset range of one partition on demand (started on first use)."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None

    async def fetch(self, topic: str, partition: int, start: int, end: int) -> list[Any]:
        """Return the records at offsets ``start`` .. ``end - 1`` (fewer on timeout)."""
        if self._consumer is None:
            # Group-less, no commits, the settings' fetch wait: the factory's defaults.
            consumer = kafka_consumer(self._settings, role="hole-filler")
            await consumer.start()
            self._consumer = consumer
        consumer = self._consumer
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[Any] = []
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200)
            for record in batch.get(tp, []):
                if start <= record.offset < end:
                    records.append(record)
            if records and records[-1].offset >= end - 1:
                break
            if any(r.offset >= end for r in batch.get(tp, [])):
                break
        return records

    async def close(self) -> None:
        """Stop the consumer."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

