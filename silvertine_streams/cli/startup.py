"""A worker's start-up, before Faust: which servers, and do they answer.

* :func:`choose_servers`: your servers when both URLs are set; the embedded
  stack when neither is (said in one line); refused when only one is, so a
  missing or misspelt URL never silently runs against a private stack.
* :func:`check_servers`: Redis answers PING and runs with settings under which
  the canonical log is safe (:func:`redis_risks`), Kafka answers and our topics
  have the configured partitions; for up to ``SILVERTINE_STARTUP_WAIT_S`` while a
  server does not answer yet (compose start-up order). Failures are one
  :class:`~silvertine_streams.errors.SilvertineError` naming the server, and the
  client libraries' own retry logging stays quiet unless ``--debug``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import click

from silvertine_streams.errors import (
    ConfigError,
    CredentialsRefused,
    ServerUnavailable,
    UnsafeServer,
)
from silvertine_streams.settings import Settings

_QUIET_LOGGERS = ("aiokafka", "kafka", "redis")
_RETRY_PAUSE_S = 1.0


def choose_servers(settings: Settings) -> Settings:
    """Return settings with both server URLs, starting the embedded stack when neither is set.

    Raises:
        ServerUnavailable: only the Redis URL is set, and that Redis does not answer.
        ConfigError: exactly one of the two URLs is set.
        EmbeddedServerError: the embedded stack could not start.
    """
    if settings.kafka_url is not None and settings.redis_url is not None:
        return settings
    if settings.kafka_url is not None or settings.redis_url is not None:
        if settings.redis_url is not None:
            # A Redis that cannot be reached is the more urgent news: say that first.
            with _quiet(True):
                asyncio.run(_ping_redis(settings))
        missing = "SILVERTINE_REDIS_URL" if settings.redis_url is None else "SILVERTINE_KAFKA_URL"
        given = "SILVERTINE_KAFKA_URL" if settings.redis_url is None else "SILVERTINE_REDIS_URL"
        raise ConfigError(missing, None, f"a URL: {given} is set, so the embedded stack is off; "
                                         "set both for your servers, or neither")
    from silvertine_streams.embedded import EmbeddedStack

    resolved = EmbeddedStack(settings).up()
    click.echo(f"silvertine: SILVERTINE_KAFKA_URL and SILVERTINE_REDIS_URL are unset: using the "
               f"embedded stack in {settings.data_dir} (Kafka {resolved.kafka_url}, Redis "
               f"{resolved.redis_display}); `silvertine stack down` stops it", err=True)
    return resolved


async def check_servers(settings: Settings, *, debug: bool = False) -> None:
    """Wait until Redis and Kafka answer and the topics are right, or give up.

    Raises:
        ServerUnavailable: a server still did not answer after ``startup_wait_s``.
        CredentialsRefused: a server refused our credentials (not retried).
        TopicMismatch: an existing topic has another partition count (not retried).
    """
    from silvertine_streams.kafka.admin import ensure_topics
    from silvertine_streams.kafka.clients import check_kafka_login

    deadline = time.monotonic() + settings.startup_wait_s
    with _quiet(not debug):
        while True:
            try:
                await _check_redis(settings)
                # A refused login first: aiokafka's bootstrap reports it as "unable to bootstrap".
                await check_kafka_login(settings, timeout_s=5.0)
                await ensure_topics(settings, timeout_s=5.0)
                return
            except CredentialsRefused:
                raise
            except ServerUnavailable:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                # Waiting for a server to come up (not synchronising with our own work).
                await asyncio.sleep(min(_RETRY_PAUSE_S, remaining))


REDIS_NEEDS: tuple[tuple[str, str, str, str], ...] = (
    # (INFO field, redis.conf setting, value needed, why)
    ("aof_enabled", "appendonly", "1",
     "yes: without AOF a logged, committed event vanishes on a Redis restart"),
    ("maxmemory_policy", "maxmemory-policy", "noeviction",
     "noeviction: any eviction policy can drop log entries or dedupe-index buckets (they "
     "expire, so volatile-* policies evict them too), and a dropped bucket logs events twice"),
    ("redis_mode", "cluster-enabled", "standalone",
     "no: the log sink's script writes several keys at once, which Redis Cluster refuses"),
)
"""What a Redis must run with for the guarantees to hold."""


def redis_risks(info: dict[str, object]) -> list[tuple[str, str, str]]:
    """The settings in ``info`` (Redis ``INFO``) that break a guarantee.

    Returns:
        (setting, its value, what is needed and why) for each.
    """
    risks = []
    for field, setting, wanted, why in REDIS_NEEDS:
        found = str(info.get(field, ""))
        if found != wanted:
            shown = {"aof_enabled": {"0": "no", "1": "yes"}}.get(field, {}).get(found, found)
            risks.append((setting, shown, why))
    return risks


async def _check_redis(settings: Settings) -> None:
    """PING Redis, then refuse settings that break the guarantees (or warn, when allowed)."""
    info = await _ping_redis(settings)
    for setting, found, needed in redis_risks(info):
        error = UnsafeServer(f"Redis at {settings.redis_display}", setting, found,
                             f"{needed} (or SILVERTINE_ALLOW_UNSAFE_REDIS=true)")
        if not settings.allow_unsafe_redis:
            raise error
        click.echo(f"silvertine: warning: {error}", err=True)


async def _ping_redis(settings: Settings) -> dict[str, object]:
    """PING Redis once, with short timeouts; return its ``INFO`` (server, persistence, memory)."""
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    from silvertine_streams.redis.clients import redis_client

    client = redis_client(settings, role="startup")
    url = settings.redis_display
    try:
        await client.ping()
        info: dict[str, object] = {}
        for section in ("server", "persistence", "memory"):
            info.update(await client.info(section))
        return info
    except AuthenticationError as exc:
        raise CredentialsRefused(url, "user or password refused") from exc
    except ResponseError as exc:
        if "NOPERM" in str(exc) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
            raise CredentialsRefused(url, str(exc)) from exc
        raise ServerUnavailable(url, str(exc)) from exc
    except (RedisError, OSError) as exc:
        raise ServerUnavailable(url, str(exc)) from exc
    finally:
        await client.aclose()


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence the client libraries' per-attempt error logs (each would print a line)."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
