"""Every stream key and topic name, in one place (DESIGN §2: the external contract).

Nothing else spells ``silvertine.<type>``, ``events:<type>``, ``log:<type>``,
``dlq`` or the Redis keys beside them (``dlq:ids``, ``dlq:requeued``,
``lease:events:<type>``, ``ops:actions``, the handler group's ``handlers:<app id>…``
keys, ``handlers:followers:<type>``, ``lease:retention``, ``sink:replicated``, the
processor's ``processor:<group>:checkpoint``) inline.
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
topic:|handlers``, ``handlers forget``): who, when, what, arguments, counts and outcome,
one entry each."""
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


def handler_group(app_id: str) -> str:
    """Return the name of an app's handler group, and the prefix of its Redis keys.

    It is ``handlers:<app id>``: one handler group per app (``SILVERTINE_APP_ID``),
    whatever number of workers the app runs.
    """
    return f"handlers:{app_id}"


def handler_cursor(app_id: str) -> str:
    """Return the hash holding, per event type, the last log entry an app's handlers finished.

    The key is ``handlers:<app id>:cursor`` (field ``<type>``, value an entry id):
    the handler group's durable position on ``log:<type>``.
    """
    return f"{handler_group(app_id)}:cursor"


def handler_lease(app_id: str) -> str:
    """Return the key of the lease held by the one worker running an app's handlers.

    The key is ``lease:handlers:<app id>``.
    """
    return f"lease:{handler_group(app_id)}"


def handler_completions(app_id: str, event_type: str) -> str:
    """Return the hash recording which idempotent handler completed which event.

    The key is ``handlers:<app id>:done:<type>``, fields ``<handler name>|<event id>``;
    a field lives only until the group's cursor passes the event's log entry.
    """
    return f"{handler_group(app_id)}:done:{event_type}"


def handler_progress(app_id: str) -> str:
    """Return the hash counting, per event type, the log entries an app's handlers finished.

    The key is ``handlers:<app id>:acked``; ``XLEN log:<type>`` minus this count
    is the group's lag (the log is never trimmed past a group's cursor).
    """
    return f"{handler_group(app_id)}:acked"


def processor_checkpoint(consumer_group: str) -> str:
    """Return the hash of the single-process ``EventProcessor``'s checkpoints.

    The key is ``processor:<consumer group>:checkpoint``; field ``<type>``, value
    JSON ``{"marks": {stream: sequence}, "log_id": entry id}``: the durable
    sequence marks, complete up to that entry of ``log:<type>``.
    """
    return f"processor:{consumer_group}:checkpoint"


def all_topics() -> list[str]:
    """Return every topic the engine declares: one per event type plus the DLQ."""
    return [event_topic(t) for t in EVENT_TYPES] + [DLQ_TOPIC]


def log_followers(event_type: str) -> str:
    """Return the set of app ids whose handler groups follow ``log:<type>``.

    The key is ``handlers:followers:<type>``: a group adds its app id when it starts
    following the log, and log retention never trims past the cursor of any app
    in the set (:mod:`silvertine_streams.sinks.retention`) until ``silvertine
    handlers forget`` removes it (:mod:`silvertine_streams.ops.handler_groups`).
    """
    return f"handlers:followers:{event_type}"


RETENTION_LEASE = "lease:retention"
"""Lease of the one worker that trims the logs and the DLQ index (``sinks/retention.py``)."""
REPLICATION_MARK = "sink:replicated"
"""A string the sinks overwrite right before ``WAIT`` when ``SILVERTINE_REDIS_WAIT_REPLICAS``
is set, so the ``WAIT`` covers the primary's whole replication stream (see
:func:`silvertine_streams.sinks.replication.wait_replicas`)."""
