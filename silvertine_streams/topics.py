"""Every stream key and topic name, in one place (DESIGN §2: the external contract).

Nothing else spells ``silvertine.<type>``, ``events:<type>``, ``log:<type>``,
``dlq`` or the Redis keys beside them (``dlq:ids``, ``dlq:requeued``,
``lease:events:<type>``, ``ops:actions``) inline.
"""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = ("market_data", "order", "fill", "signal", "system")
"""Every event type, in the order the engine lists them."""

TOPIC_PREFIX = "silvertine."
DLQ_TOPIC = "silvertine.dlq"
DLQ_STREAM = "dlq"
DLQ_INDEX = "dlq:ids"
"""Hash ``event_id -> "<dlq entry id> <dlq entry id> ..."`` (oldest first), kept by the
dead-letter sink and by ``silvertine dlq requeue``/``purge``."""
DLQ_REQUEUED = "dlq:requeued"
"""Hash ``event_id -> "<dlq entry id> events:<type>/<entry id>; ..."``: requeue history."""
OPS_ACTIONS = "ops:actions"
"""Stream of operator actions (``dlq purge``/``requeue``, ``rewind``, ``replay --to
topic:|handlers``): who, when, what, arguments, counts and outcome, one entry each."""
INGRESS_GROUP = "silvertine-ingress"
"""Redis consumer group the ingress mirror reads ``events:<type>`` with."""


def event_topic(event_type: str) -> str:
    """Return the Kafka topic of ``event_type``: ``silvertine.<type>``."""
    return f"{TOPIC_PREFIX}{event_type}"


def ingress_stream(event_type: str) -> str:
    """Return the Redis ingress stream of ``event_type``: ``events:<type>``."""
    return f"events:{event_type}"


def ingress_lease(event_type: str) -> str:
    """Return the Redis key of the ingress mirror's lease on ``events:<type>``.

    The key is ``lease:events:<type>``; whichever worker holds it mirrors that stream.
    """
    return f"lease:{ingress_stream(event_type)}"


def log_stream(event_type: str) -> str:
    """Return the Redis canonical log of ``event_type``: ``log:<type>``."""
    return f"log:{event_type}"


def all_topics() -> list[str]:
    """Return every topic the engine declares: one per event type plus the DLQ."""
    return [event_topic(t) for t in EVENT_TYPES] + [DLQ_TOPIC]
