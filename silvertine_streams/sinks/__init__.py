"""Redis sinks: the idempotent canonical log and the dead-letter stream.

Both sinks retry a Redis outage until it ends (backpressure, never loss) and
stop only on :meth:`close` (raising :class:`SinkClosed`) or on an error that
retrying cannot fix.
"""

from __future__ import annotations

from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord, WriteStatus
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.sinks.retry import Backoff, SinkClosed

__all__ = [
    "Backoff",
    "CanonicalLogSink",
    "DeadLetter",
    "DeadLetterSink",
    "LogRecord",
    "SinkClosed",
    "WriteStatus",
]
