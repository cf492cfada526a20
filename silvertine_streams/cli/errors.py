"""How every ``silvertine`` command reports our errors: one line, exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from silvertine_streams.errors import SilvertineError

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_ERROR_EXIT = 2


def fails_cleanly(command: F) -> F:
    """Turn our errors into one readable line and exit status 2, not a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SilvertineError as exc:
            click.echo(f"silvertine: {exc}", err=True)
            sys.exit(CONFIG_ERROR_EXIT)

    return wrapper  # type: ignore[return-value]  # same signature as command
