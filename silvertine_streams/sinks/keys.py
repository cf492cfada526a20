"""Redis key names used by the sinks.

Stream and key names are spelled once, in :mod:`silvertine_streams.topics`, and re-exported
here for the sinks; the dedupe index's bucket keys belong to the log sink alone.
"""

from __future__ import annotations

from silvertine_streams.topics import DLQ_INDEX, DLQ_STREAM, ingress_stream, log_stream

__all__ = ["DLQ_INDEX", "DLQ_STREAM", "dedupe_bucket", "ingress_stream", "log_stream"]


def dedupe_bucket(event_type: str, bucket: int) -> str:
    """Return the hash holding ``event_id -> fingerprint`` for one dedupe time bucket.

    Args:
        event_type: the event type whose canonical log the bucket protects.
        bucket: ``floor(now_s / window_s)`` on the writer's clock.
    """
    return f"ids:{event_type}:{bucket}"
