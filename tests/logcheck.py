"""Read the canonical log and the DLQ as a test sees them, and check DESIGN §3 on them."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from silvertine_streams.topics import DLQ_STREAM, log_stream


async def read_log(redis: aioredis.Redis, event_type: str) -> list[dict[str, Any]]:
    """Return every event of ``log:<type>`` in log order, as decoded JSON."""
    entries = await redis.xrange(log_stream(event_type))
    return [json.loads(fields[b"event"]) for _, fields in entries]


async def read_dlq(redis: aioredis.Redis) -> list[dict[str, str]]:
    """Return every dead letter with ``payload``, ``reason`` and ``origin`` as text."""
    entries = await redis.xrange(DLQ_STREAM)
    return [{k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            for _, fields in entries]


def assert_log_invariants(events: list[dict[str, Any]]) -> None:
    """No event id twice; within each (source, symbol), sequences strictly increase."""
    counts = Counter(e["event_id"] for e in events)
    doubled = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not doubled, f"event ids logged more than once: {list(doubled.items())[:5]}"
    last: dict[tuple[str, str], int] = {}
    for event in events:
        stream = (event["source"], event.get("symbol") or event.get("kind", ""))
        sequence = event["sequence"]
        assert isinstance(sequence, int), f"logged event without a sequence: {event}"
        previous = last.get(stream)
        assert previous is None or sequence > previous, (
            f"stream {stream}: sequence {sequence} logged after {previous}"
        )
        last[stream] = sequence


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
