"""Batch envelopes: events grouped by topic and partition, bounded in count and bytes.

A Kafka broker refuses a message over its size limit (and aiokafka's producer
refuses it first, with ``MessageSizeTooLargeError``), so an envelope is bounded
by bytes as well as by events: a chunk whose encoding is too long is split in
halves until each half fits. Each event is encoded once, which also gives its
own size, so an event over the per-event bound is found in the same pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from silvertine_streams.events import Event, encode_event
from silvertine_streams.topics import event_topic


def partition_for(key: bytes, partitions: int) -> int:
    """Return the partition of ``key``: murmur2, as Java clients and aiokafka do."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Kafka message: a JSON array of events that belong on one partition.

    Attributes:
        topic: ``silvertine.<type>``.
        partition: the partition every event's symbol maps to.
        key: the first event's symbol (UTF-8), the message key.
        payload: the JSON array.
        events: the events it carries, in order.
    """

    topic: str
    partition: int
    key: bytes
    payload: bytes
    events: list[Event]


@dataclass(frozen=True, slots=True)
class Oversize:
    """An event whose own JSON is over the per-event bound: it fits no envelope."""

    event: Event
    size: int


def group_envelopes(
    events: Iterable[Event], partitions: int, max_events: int
) -> list[tuple[str, int, list[Event]]]:
    """Group events into ``(topic, partition, events)`` chunks, keeping each symbol's order.

    Events of one topic and partition keep their relative order; a chunk holds
    at most ``max_events``.
    """
    groups: dict[tuple[str, int], list[list[Event]]] = {}
    for event in events:
        slot = (event_topic(event.event_type.value),
                partition_for(event.partition_key.encode(), partitions))
        chunks = groups.setdefault(slot, [[]])
        if len(chunks[-1]) >= max_events:
            chunks.append([])
        chunks[-1].append(event)
    return [(topic, partition, chunk)
            for (topic, partition), chunks in groups.items() for chunk in chunks]


def pack_envelopes(
    events: Iterable[Event], partitions: int, max_events: int, max_event_bytes: int,
    max_message_bytes: int,
) -> tuple[list[Envelope], list[Oversize]]:
    """Encode events into envelopes of at most ``max_events`` and ``max_message_bytes``.

    Returns:
        The envelopes in per-partition order, and the events left out because
        their own JSON is over ``max_event_bytes`` (or could not fit a message).
    """
    envelopes: list[Envelope] = []
    oversize: list[Oversize] = []
    for topic, partition, chunk in group_envelopes(events, partitions, max_events):
        encoded = []
        kept = []
        for event in chunk:
            data = encode_event(event)
            if len(data) > max_event_bytes or len(data) + 2 > max_message_bytes:
                oversize.append(Oversize(event, len(data)))
            else:
                encoded.append(data)
                kept.append(event)
        if kept:
            _fit(topic, partition, kept, encoded, max_message_bytes, envelopes)
    return envelopes, oversize


def _fit(topic: str, partition: int, events: list[Event], encoded: list[bytes],
         max_bytes: int, into: list[Envelope]) -> None:
    """Append ``events`` as one envelope, or as halves, each within ``max_bytes``."""
    size = sum(map(len, encoded)) + len(encoded) + 1  # brackets and commas
    if size <= max_bytes or len(events) == 1:
        into.append(Envelope(topic, partition, events[0].partition_key.encode(),
                             b"[" + b",".join(encoded) + b"]", events))
        return
    middle = len(events) // 2
    _fit(topic, partition, events[:middle], encoded[:middle], max_bytes, into)
    _fit(topic, partition, events[middle:], encoded[middle:], max_bytes, into)
