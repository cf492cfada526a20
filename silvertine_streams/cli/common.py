"""What several ``silvertine`` command families share.

The ``--config`` option, settings from a running embedded stack, running a
coroutine, a Redis client per command, ISO time options and a console for
tables. The libraries behind them (settings, redis, rich) load inside the
functions, so ``silvertine --help`` imports none of them.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from silvertine_streams.errors import SilvertineError
from silvertine_streams.topics import EVENT_TYPES

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from rich.console import Console

    from silvertine_streams.settings import Settings

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EVENT_TYPE = click.Choice(EVENT_TYPES)
"""The ``--type`` option's choices: every event type."""


_CONFIG_META = "silvertine.config"


def _remember_config(context: click.Context, _param: click.Parameter,
                     value: Path | None) -> None:
    if value is not None:
        context.meta[_CONFIG_META] = value  # meta is shared by the whole command line


def config_option(command: F) -> F:
    """Add ``--config PATH`` (the YAML config file) to a command that loads settings."""
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False, is_eager=True, callback=_remember_config, metavar="PATH",
        help="YAML config file, e.g. config/event_engine.yaml (default: $SILVERTINE_CONFIG); "
             "SILVERTINE_* variables win over it",
    )(command)


def load_settings() -> Settings:
    """Load the settings (env, ``--config`` file); the embedded stack is not consulted."""
    from silvertine_streams.settings import load_settings as load

    context = click.get_current_context(silent=True)
    config_file = context.meta.get(_CONFIG_META) if context is not None else None
    return load(config_file=config_file)


def running_stack_settings(kafka: bool = False, redis: bool = True) -> Settings:
    """Load settings and fill unset URLs from the running embedded stack (never start it).

    The operations commands use this: an empty new stack has nothing to replay
    or audit, so they do not start one.

    Args:
        kafka: Kafka is needed; fill ``kafka_url`` when unset.
        redis: Redis is needed; fill ``redis_url`` when unset.

    Returns:
        The settings with every needed URL set.

    Raises:
        SilvertineError: a needed URL is unset and the embedded stack does not run it.
    """
    settings = load_settings()
    missing_kafka = kafka and settings.kafka_url is None
    missing_redis = redis and settings.redis_url is None
    if not (missing_kafka or missing_redis):
        return settings
    from silvertine_streams.embedded import EmbeddedStack

    running = {s.name: s for s in EmbeddedStack(settings).status() if s.alive}
    updates: dict[str, str] = {}
    for name, missing in (("kafka", missing_kafka), ("redis", missing_redis)):
        if not missing:
            continue
        status = running.get(name)
        if status is None or status.url is None:
            raise SilvertineError(
                f"no {name} to talk to: set SILVERTINE_{name.upper()}_URL, or start the "
                f"embedded stack (`silvertine stack up`, data dir {settings.data_dir})"
            )
        updates[f"{name}_url"] = status.url
    return settings.model_copy(update=updates)


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``factory`` makes in a new event loop and return its result."""
    import asyncio

    return asyncio.run(factory())


async def with_redis(settings: Settings, body: Callable[[Redis], Awaitable[T]]) -> T:
    """Call ``body`` with a Redis client for ``settings.redis_url``; close it afterwards.

    Raises:
        CredentialsRefused: Redis refused the user or password, or the ACL user
            lacks a command or key the tool needs (``NOPERM``).
        ServerUnavailable: Redis did not answer (one line naming it, password masked).
    """
    from redis.exceptions import AuthenticationError, NoPermissionError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from silvertine_streams.errors import CredentialsRefused, ServerUnavailable
    from silvertine_streams.redis.clients import redis_client

    # Replay and audit read pages of whole logs: one command may take long.
    client = redis_client(settings, role="cli", read_timeout_s=30.0)
    try:
        return await body(client)
    except (AuthenticationError, NoPermissionError) as exc:
        raise CredentialsRefused(settings.redis_display, str(exc)) from exc
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise ServerUnavailable(settings.redis_display, str(exc)) from exc
    finally:
        await client.aclose()


def parse_time(value: str | None, option: str) -> datetime | None:
    """Parse an ISO-8601 time option; a bad one is a usage error naming ``option``."""
    if value is None:
        return None
    from silvertine_streams.replay.where import parse_timestamp

    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def stdout_console() -> Console:
    """A console for tables on stdout; wide when piped, so no cell is cut."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)
