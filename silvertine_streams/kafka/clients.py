"""The one place aiokafka clients are built: producers, consumers and admin clients.

Every client gets the bootstrap servers of :class:`Settings`, a ``client_id``
naming silvertine and its role (brokers log it, and quotas key on it, so an
operator sees who connects), and the security keywords of
:func:`kafka_security`; callers add only what their role needs. Faust builds
the worker's own clients: ``app.py`` hands it :func:`kafka_credentials` as
``broker_credentials``, and :func:`kafka_security` is Faust's own translation
of those credentials, so the worker and every other client cannot disagree.

Kafka SASL/TLS settings become credentials in :func:`kafka_credentials`, and
nowhere else; :func:`check_kafka_login` tells a refused login from a server that
does not answer, which aiokafka's bootstrap does not (it logs the reason and
raises "Unable to bootstrap").
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from silvertine_streams.errors import ConfigError, CredentialsRefused, ServerUnavailable
from silvertine_streams.settings import ENV_PREFIX, Settings

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

    ``SILVERTINE_KAFKA_SECURITY_PROTOCOL`` decides: ``PLAINTEXT`` is ``None``;
    ``SSL`` an ``SSLCredentials``; ``SASL_PLAINTEXT`` / ``SASL_SSL`` a
    ``SASLCredentials`` (with the TLS context for ``SASL_SSL``). The TLS context
    is aiokafka's ``create_ssl_context`` (certificate and host name checked)
    with the CA file, client certificate and key of the settings.

    Raises:
        ConfigError: a certificate or key file cannot be loaded (not PEM, the
            wrong key, an encrypted key without its password).
    """
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = _ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # the settings refuse SASL without one
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """The client TLS context of the Kafka settings."""
    key_password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            # Never None: OpenSSL would prompt on the terminal for an encrypted key.
            password=key_password.get_secret_value() if key_password is not None else "",
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        named = [name for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
                 if getattr(settings, name) is not None] or ["kafka_ssl_cafile"]
        raise ConfigError(", ".join(f"{ENV_PREFIX}{name.upper()}" for name in named),
                          ", ".join(str(getattr(settings, name)) for name in named),
                          f"PEM files that load, the key matching the certificate and "
                          f"{ENV_PREFIX}KAFKA_SSL_KEY_PASSWORD set for an encrypted key "
                          f"({exc})") from exc
    # Verification stays on; only the match of certificate and host name may be relaxed.
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_security(settings: Settings) -> dict[str, Any]:
    """Return the aiokafka keywords for security (``security_protocol``, ``ssl_context``, …).

    Faust's own translation of :func:`kafka_credentials`, so our clients use
    exactly what the worker's do.
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


def compression_type(settings: Settings) -> str | None:
    """Return aiokafka's ``compression_type`` for ``SILVERTINE_KAFKA_COMPRESSION``."""
    return None if settings.kafka_compression == "none" else settings.kafka_compression


def kafka_producer(settings: Settings, *, role: str, **overrides: Any) -> AIOKafkaProducer:
    """Build an (unstarted) producer for ``settings``' Kafka.

    Defaults: ``acks="all"`` (aiokafka's default is 1: a leader crash could lose
    an acknowledged event) and no idempotence (Tansu refuses
    ``InitProducerId``; the engine's idempotent log absorbs retried sends).

    Args:
        settings: ``kafka_url`` and the Kafka security settings.
        role: what the producer is for, in its ``client_id``.
        **overrides: other aiokafka producer keywords (``linger_ms``, …).

    Raises:
        ConfigError: ``settings.kafka_url`` is not set.
        TypeError: an override names a keyword the settings decide.
    """
    defaults: dict[str, Any] = {"acks": "all", "enable_idempotence": False,
                                "compression_type": compression_type(settings)}
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


LOGIN_CHECK_TIMEOUT_S = 10.0
_REFUSED = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError)


async def check_kafka_login(settings: Settings, *, timeout_s: float = LOGIN_CHECK_TIMEOUT_S
                            ) -> None:
    """Open one connection to a bootstrap server, TLS handshake and SASL login included.

    Tries the servers of ``SILVERTINE_KAFKA_URL`` in turn until one lets us in.

    Raises:
        CredentialsRefused: a broker refused the SASL login (not worth retrying).
        ServerUnavailable: no broker answered, or none passed the TLS handshake
            (the reason names the certificate problem).
    """
    from aiokafka.conn import create_conn

    security = kafka_security(settings)
    reasons: list[str] = []
    for server in settings.kafka_bootstrap:
        host, _, port = server.rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(
                host.strip("[]"), int(port), client_id=client_id("login-check"),
                request_timeout_ms=int(timeout_s * 1000), **security), timeout_s)
        except _REFUSED as exc:
            user = settings.kafka_sasl_username
            raise CredentialsRefused(
                f"kafka://{server}",
                f"{settings.kafka_sasl_mechanism} login as {user!r} refused "
                f"({type(exc).__name__}; check {ENV_PREFIX}KAFKA_SASL_USERNAME and _PASSWORD)",
            ) from exc
        except ssl.SSLError as exc:
            detail = (f"certificate verify failed: {exc.verify_message}"
                      if isinstance(exc, ssl.SSLCertVerificationError) else exc.reason or exc)
            reasons.append(f"{server}: TLS handshake failed: {detail} "
                           f"(check {ENV_PREFIX}KAFKA_SSL_CAFILE and the broker's certificate)")
        except (KeyError, ValueError) as exc:  # after SSLError: a verify error is a ValueError
            if not settings.kafka_security_protocol.startswith("SASL_"):
                raise
            # aiokafka's SCRAM client cannot read a server's "e=..." final message (it
            # looks for "v=" and raises KeyError) or finds a wrong server signature.
            raise CredentialsRefused(
                f"kafka://{server}",
                f"{settings.kafka_sasl_mechanism} login as {settings.kafka_sasl_username!r} "
                f"refused (the broker ended the exchange with an error; check "
                f"{ENV_PREFIX}KAFKA_SASL_USERNAME and _PASSWORD)",
            ) from exc
        except (OSError, KafkaError, TimeoutError) as exc:
            reasons.append(f"{server}: {exc or type(exc).__name__}")
        else:
            conn.close()
            return
    raise ServerUnavailable(str(settings.kafka_url), "; ".join(reasons))
