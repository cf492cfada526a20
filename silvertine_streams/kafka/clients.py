"""The one place aiokafka clients are built: producers, consumers and admin clients.

Every client gets the bootstrap servers of :class:`Settings`, a ``client_id``
naming silvertine and its role (brokers log it, and quotas key on it, so an
operator sees who connects), and the security keywords of
:func:`kafka_security`; callers add only what their role needs. Faust builds
the worker's own clients: ``app.py`` hands it :func:`kafka_credentials` as
``broker_credentials``, and :func:`kafka_security` is Faust's own translation
of those credentials, so the worker and every other client cannot disagree.

Kafka SASL/TLS settings go in :func:`kafka_credentials`, and nowhere else.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from silvertine_streams.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

CLIENT_ID_PREFIX = "silvertine"
ADMIN_REQUEST_TIMEOUT_MS = 15_000
"""A broker that has not answered an admin request (metadata, create topics) in
15 s will not; aiokafka's 40 s default only delays the error an operator needs."""

_ROLE = re.compile(r"^[A-Za-z0-9._-]+$")
# Keywords only this module decides: a caller setting one would talk to
# another cluster, or bypass the security settings.
_FIXED_PREFIXES = ("bootstrap_servers", "client_id", "security_protocol", "ssl_", "sasl_")


def client_id(role: str) -> str:
    """Return the Kafka ``client_id`` of a client playing ``role``, e.g. ``silvertine-rewind``.

    Raises:
        ValueError: ``role`` is empty or has characters other than letters,
            digits, ``.``, ``_`` and ``-`` (plain in broker logs and metric tags).
    """
    if not _ROLE.match(role):
        raise ValueError(f"a client role is letters, digits, '.', '_' or '-'; got {role!r}")
    return f"{CLIENT_ID_PREFIX}-{role}"


def kafka_credentials(settings: Settings) -> CredentialsT | None:
    """Return how to authenticate to Kafka, in the form Faust's ``broker_credentials`` takes.

    The seam for Kafka security: SASL and TLS settings become a Faust
    ``SASLCredentials`` / ``SSLCredentials`` here (with an ``ssl.SSLContext``
    from aiokafka's ``create_ssl_context``), and the worker and every client
    built below follow. Until then: ``None``, i.e. PLAINTEXT.
    """
    return None


def kafka_security(settings: Settings) -> dict[str, Any]:
    """Return the aiokafka keywords for security (``security_protocol``, ``ssl_context``, …).

    Faust's own translation of :func:`kafka_credentials`, so our clients use
    exactly what the worker's do. Today ``{"security_protocol": "PLAINTEXT"}``.
    """
    # Imported here: Faust's driver costs ~0.25 s to import, and tools that only
    # build a client (probes, audit) should not pay it at import time.
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return dict(credentials_to_aiokafka_auth(kafka_credentials(settings)))


def _options(
    settings: Settings, role: str, defaults: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    fixed = [key for key in overrides if key.startswith(_FIXED_PREFIXES)]
    if fixed:
        raise TypeError(
            f"{', '.join(sorted(fixed))} come from the settings (kafka/clients.py), "
            "not from a caller"
        )
    return {
        **defaults,
        **overrides,
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id(role),
        **kafka_security(settings),
    }


def kafka_producer(settings: Settings, *, role: str, **overrides: Any) -> AIOKafkaProducer:
    """Build an (unstarted) producer for ``settings``' Kafka.

    Defaults: ``acks="all"`` (aiokafka's default is 1: a leader crash could lose
    an acknowledged event) and no idempotence (Tansu refuses
    ``InitProducerId``; the engine's idempotent log absorbs retried sends).

    Args:
        settings: ``kafka_url`` (and, later, the Kafka security settings).
        role: what the producer is for, in its ``client_id``.
        **overrides: other aiokafka producer keywords (``linger_ms``, …).

    Raises:
        ConfigError: ``settings.kafka_url`` is not set.
        TypeError: an override names a keyword the settings decide.
    """
    defaults: dict[str, Any] = {"acks": "all", "enable_idempotence": False}
    return AIOKafkaProducer(**_options(settings, role, defaults, overrides))


def kafka_consumer(
    settings: Settings, *topics: str, role: str, **overrides: Any
) -> AIOKafkaConsumer:
    """Build an (unstarted) consumer for ``settings``' Kafka, subscribed to ``topics`` if any.

    Defaults: no group and no auto-commit (our own consumers read ranges,
    offsets or lag; a commit must only ever follow processing, so a caller that
    commits does it explicitly), ``auto_offset_reset="earliest"`` (nothing
    produced is skipped, as in the worker) and the fetch wait of
    ``SILVERTINE_FETCH_WAIT_MS`` (aiokafka's 500 ms is latency on Tansu).

    Args:
        settings: ``kafka_url``, ``fetch_wait_ms``.
        *topics: topics to subscribe to (none: the caller assigns partitions).
        role: what the consumer is for, in its ``client_id``.
        **overrides: other aiokafka consumer keywords (``group_id``, …).

    Raises:
        ConfigError: ``settings.kafka_url`` is not set.
        TypeError: an override names a keyword the settings decide.
    """
    defaults: dict[str, Any] = {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": settings.fetch_wait_ms,
    }
    return AIOKafkaConsumer(*topics, **_options(settings, role, defaults, overrides))


def kafka_admin(settings: Settings, *, role: str, **overrides: Any) -> AIOKafkaAdminClient:
    """Build an (unstarted) admin client for ``settings``' Kafka.

    Args:
        settings: ``kafka_url``.
        role: what the client is for, in its ``client_id``.
        **overrides: other aiokafka admin keywords (``request_timeout_ms``
            defaults to :data:`ADMIN_REQUEST_TIMEOUT_MS`).

    Raises:
        ConfigError: ``settings.kafka_url`` is not set.
        TypeError: an override names a keyword the settings decide.
    """
    defaults: dict[str, Any] = {"request_timeout_ms": ADMIN_REQUEST_TIMEOUT_MS}
    return AIOKafkaAdminClient(**_options(settings, role, defaults, overrides))
