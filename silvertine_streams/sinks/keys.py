"""Redis key names used by the sinks, spelled in one place.

The lead may move these into ``topics.py``; until then every module that needs a
stream or dedupe key imports it from here rather than spelling it inline.
"""

from __future__ import annotations

DLQ_STREAM = "dlq"
"""Redis stream of dead letters (fields ``payload``, ``reason``, ``origin``)."""


def log_stream(event_type: str) -> str:
    """Return the canonical-log stream of ``event_type`` (field ``event`` = event JSON)."""
    return f"log:{event_type}"


def ingress_stream(event_type: str) -> str:
    """Return the Redis ingress stream of ``event_type`` (the seed's producer API)."""
    return f"events:{event_type}"


def dedupe_bucket(event_type: str, bucket: int) -> str:
    """Return the hash holding ``event_id -> fingerprint`` for one dedupe time bucket.

    Args:
        event_type: the event type whose canonical log the bucket protects.
        bucket: ``floor(now_s / window_s)`` on the writer's clock.
    """
    return f"ids:{event_type}:{bucket}"
