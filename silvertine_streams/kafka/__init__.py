"""Kafka at the edge: every aiokafka client, topic declaration, and the Publisher."""

from __future__ import annotations

from silvertine_streams.kafka.envelopes import group_envelopes, pack_envelopes, partition_for
from silvertine_streams.kafka.publisher import Publisher

__all__ = ["Publisher", "group_envelopes", "pack_envelopes", "partition_for"]
