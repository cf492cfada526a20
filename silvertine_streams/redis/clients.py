"""The one place redis-py clients are built.

Every client of ours is an asyncio ``Redis`` from :func:`redis_client`, with the
timeouts, retry policy, health checks and name chosen here, for these reasons:

* **Fail fast, never hang.** The sinks retry a Redis outage forever, with
  backoff, and count and log every retry (``sinks/retry.py``): that loop is the
  engine's backpressure, and it only works when a call *ends*. So a call gives
  up after :data:`COMMAND_TIMEOUT_S`. Our commands take milliseconds (a
  500-event Lua batch, an XADD, an XREADGROUP blocking 100 ms); 5 s stays far
  above a healthy worst case (``appendfsync always`` on a slow disk) while a
  hung server (stopped, partitioned) shows up as an error within seconds.
  Blocking reads must block for less. A connect, TLS included, takes
  milliseconds even across a data centre; :data:`CONNECT_TIMEOUT_S` bounds an
  unreachable host that drops packets.
* **Long reads ask for it.** Replay and the operator tools read pages of a big
  log: they pass ``read_timeout_s`` — one factory, a parameter, not a second one.
* **Retry little, and only where safe.** redis-py's default retries ten times,
  timeouts too: a hung server became a minute of silent waiting inside one
  call, invisible to the sinks' counters and to shutdown. Here a call is
  retried at most :data:`RETRIES` times within a fraction of a second, on
  connection errors only, the case where the server mostly never saw the
  command (a pooled connection closed while idle, a refused connect, ``LOADING``
  after a restart); then the caller's own loop decides. Never on a timeout:
  the command may have run, and a hung server stays hung. A replay after a
  connection lost mid-reply is harmless for what we send: the log script is a
  check-and-add per event id, ingress XADDs carry event ids the engine
  deduplicates, XACK/XDEL are idempotent.
* **Health checks.** A connection idle for :data:`HEALTH_CHECK_INTERVAL_S` is
  PINGed before use, so one a firewall dropped silently is replaced before a
  write goes out on it, not after a socket timeout.
* **A name per client.** ``CLIENT SETNAME silvertine:<role>:<host>:<pid>``, so
  ``CLIENT LIST`` tells an operator who is connected (an ACL user needs
  ``+client|setname``, part of ``@connection``).

Redis ACL and TLS settings (the URL's or ``SILVERTINE_REDIS_USERNAME`` /
``_PASSWORD``, ``rediss://`` with ``SILVERTINE_REDIS_SSL_*``) become client
keywords in :func:`redis_security`, and nowhere else. The URL is parsed by us
(:func:`~silvertine_streams.security.parse_redis_url`), not by ``from_url``, so
a password may hold any character.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from silvertine_streams.errors import ConfigError
from silvertine_streams.security import parse_redis_url
from silvertine_streams.settings import ENV_PREFIX, Settings

COMMAND_TIMEOUT_S = 5.0
"""Socket timeout of a command (see the module docstring)."""
CONNECT_TIMEOUT_S = 2.0
"""Timeout of a connect, TLS handshake included."""
RETRIES = 2
"""Retries of a call that hit a connection error, after the first attempt."""
RETRY_BASE_S = 0.05
RETRY_CAP_S = 0.25
HEALTH_CHECK_INTERVAL_S = 15
"""Seconds a connection may idle before it is PINGed ahead of its next use."""

_ROLE = re.compile(r"^[A-Za-z0-9._-]+$")


def client_name(role: str) -> str:
    """Return the ``CLIENT SETNAME`` of a client playing ``role`` in this process.

    ``silvertine:<role>:<host>:<pid>``, e.g. ``silvertine:worker:desk-3:4711``.

    Raises:
        ValueError: ``role`` is empty or has characters other than letters,
            digits, ``.``, ``_`` and ``-`` (Redis refuses spaces in a name).
    """
    if not _ROLE.match(role):
        raise ValueError(f"a client role is letters, digits, '.', '_' or '-'; got {role!r}")
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown"
    return f"silvertine:{role}:{host}:{os.getpid()}"


def redis_security(settings: Settings) -> dict[str, Any]:
    """Return redis-py keywords for ACL and TLS: user, password, ``ssl``, CA, certificate, key.

    Only what is set: a plain ``redis://host`` URL gives ``{}``. TLS
    (``rediss://``) always verifies the server's certificate; the host name
    check follows ``SILVERTINE_REDIS_SSL_CHECK_HOSTNAME``.

    Raises:
        ConfigError: ``settings.redis_url`` is not set.
    """
    if settings.redis_url is None:
        raise ConfigError(f"{ENV_PREFIX}REDIS_URL", None, "a URL (the stack is not up)")
    address = parse_redis_url(settings.redis_url)
    keywords: dict[str, Any] = {}
    username = settings.redis_username or address.username
    if username is not None:
        keywords["username"] = username
    if settings.redis_password is not None:
        keywords["password"] = settings.redis_password.get_secret_value()
    elif address.password is not None:
        keywords["password"] = address.password
    if address.tls:
        keywords.update(ssl=True, ssl_cert_reqs="required",
                        ssl_check_hostname=settings.redis_ssl_check_hostname)
        if settings.redis_ssl_cafile is not None:
            keywords["ssl_ca_certs"] = str(settings.redis_ssl_cafile)
        if settings.redis_ssl_certfile is not None:
            keywords["ssl_certfile"] = str(settings.redis_ssl_certfile)
            # Never None: OpenSSL would prompt on the terminal for an encrypted key.
            keywords["ssl_password"] = ""
        if settings.redis_ssl_keyfile is not None:
            keywords["ssl_keyfile"] = str(settings.redis_ssl_keyfile)
    return keywords


def redis_client(
    settings: Settings,
    *,
    role: str,
    read_timeout_s: float = COMMAND_TIMEOUT_S,
    decode_responses: bool = False,
) -> Redis:
    """Build an asyncio Redis client for ``settings.redis_url`` (connects on first use).

    Args:
        settings: ``redis_url`` and the Redis security settings (:func:`redis_security`).
        role: what the client is for, in its client name (:func:`client_name`).
        read_timeout_s: how long one command may take; raise it only for long
            reads (replay pages), never for the sinks.
        decode_responses: return ``str`` instead of ``bytes``. Off by default:
            the sinks and readers work on bytes.

    Raises:
        ConfigError: ``settings.redis_url`` is not set.
        ValueError: ``role`` is not a plain name.
    """
    security = redis_security(settings)  # first: it refuses a missing URL
    assert settings.redis_url is not None
    address = parse_redis_url(settings.redis_url)
    retry = Retry(
        ExponentialWithJitterBackoff(cap=RETRY_CAP_S, base=RETRY_BASE_S),
        RETRIES,
        supported_errors=(RedisConnectionError,),
    )
    client: Redis = Redis(
        host=address.host,
        port=address.port,
        db=address.db,
        socket_timeout=read_timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=retry,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        client_name=client_name(role),
        decode_responses=decode_responses,
        **security,
    )
    return client
