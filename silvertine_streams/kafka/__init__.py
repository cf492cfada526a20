"""Kafka at the edge: every aiokafka client, topic declaration, and the Publisher."""

from __future__ import annotations

from silvertine_streams.kafka.publisher import Publisher, group_envelopes, partition_for

__all__ = ["Publisher", "group_envelopes", "partition_for"]
