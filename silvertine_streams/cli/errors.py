"""How every ``silvertine`` command reports our errors: one line, an exit status per class.

| status | class | what to do |
|---|---|---|
| 1 | any other error of ours | read the line |
| 2 | a setting: ours (bad, unknown, half-set URLs) or Redis's (unsafe) | fix what it names |
| 3 | a server did not answer (Kafka or Redis) | start it, or raise ``SILVERTINE_STARTUP_WAIT_S`` |
| 4 | a server refused our credentials | fix the user or password |
| 5 | an existing topic has another partition count | align ``SILVERTINE_PARTITIONS`` |
| 6 | the embedded stack could not start | read the server log it names |

An operator action refused before it changed anything (no ``--yes`` without a
terminal, workers still running, a target the engine refuses) also ends with 2,
the status click gives a usage error.

``silvertine --debug …`` (or ``SILVERTINE_LOG_LEVEL=debug``) shows the traceback too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from silvertine_streams.errors import (
    ActionRefused,
    ConfigError,
    CredentialsRefused,
    EmbeddedServerError,
    ServerUnavailable,
    SilvertineError,
    TopicMismatch,
    UnsafeServer,
)

F = TypeVar("F", bound=Callable[..., Any])

OTHER_ERROR_EXIT = 1
CONFIG_ERROR_EXIT = 2
SERVER_UNAVAILABLE_EXIT = 3
CREDENTIALS_REFUSED_EXIT = 4
TOPIC_MISMATCH_EXIT = 5
EMBEDDED_STACK_EXIT = 6
REFUSED_EXIT = 2
"""An operator action refused before it changed anything: as click's usage errors."""

STARTUP_FAILURE_EXITS = frozenset({
    CONFIG_ERROR_EXIT, SERVER_UNAVAILABLE_EXIT, CREDENTIALS_REFUSED_EXIT, TOPIC_MISMATCH_EXIT,
    EMBEDDED_STACK_EXIT,
})
"""Statuses that mean "could not start": the supervisor never restarts on them."""

# Most specific first: CredentialsRefused is a ServerUnavailable.
_EXITS: tuple[tuple[type[SilvertineError], int], ...] = (
    (ConfigError, CONFIG_ERROR_EXIT),
    (UnsafeServer, CONFIG_ERROR_EXIT),
    (CredentialsRefused, CREDENTIALS_REFUSED_EXIT),
    (ServerUnavailable, SERVER_UNAVAILABLE_EXIT),
    (TopicMismatch, TOPIC_MISMATCH_EXIT),
    (EmbeddedServerError, EMBEDDED_STACK_EXIT),
    (ActionRefused, REFUSED_EXIT),
)


def exit_status(error: SilvertineError) -> int:
    """The documented exit status of ``error``'s class."""
    return next((status for kind, status in _EXITS if isinstance(error, kind)),
                OTHER_ERROR_EXIT)


def debugging() -> bool:
    """Whether the user asked for tracebacks (``silvertine --debug``)."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("debug"))


def fails_cleanly(command: F) -> F:
    """Turn our errors into one readable line and their class's exit status."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SilvertineError as exc:
            if debugging():
                raise
            click.echo(f"silvertine: {exc}", err=True)
            sys.exit(exit_status(exc))

    return wrapper  # type: ignore[return-value]  # same signature as command
