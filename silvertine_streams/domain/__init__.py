"""Pure decisions of the event core: sequencing, reordering, flow, priority, circuit breaking.

Nothing here imports faust, redis or kafka or does I/O; the agents call in here
and keep the state this returns in their tables and sinks.
"""

from __future__ import annotations

from silvertine_streams.domain.circuit import CircuitBreaker, CircuitState, TransitionCallback
from silvertine_streams.domain.sequencing import (
    IN_ORDER,
    OutcomeKind,
    SequencedEvent,
    SequenceOutcome,
    SequenceTracker,
    stream_key,
    stream_of,
)

__all__ = [
    "IN_ORDER",
    "CircuitBreaker",
    "CircuitState",
    "OutcomeKind",
    "SequenceOutcome",
    "SequenceTracker",
    "SequencedEvent",
    "TransitionCallback",
    "stream_key",
    "stream_of",
]
