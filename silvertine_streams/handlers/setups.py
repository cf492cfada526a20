"""Loading the handler setups named by ``SILVERTINE_HANDLERS`` (``module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

from silvertine_streams.errors import ConfigError
from silvertine_streams.handlers.registry import HandlerRegistry

HandlerSetup = Callable[[HandlerRegistry], object]
"""Subscribes handlers on the registry it is given (``setup(bus)``)."""


def load_handler_setups(entries: Iterable[str]) -> list[HandlerSetup]:
    """Import each ``module:function`` entry of ``SILVERTINE_HANDLERS``.

    Raises:
        ConfigError: an entry is malformed, its module does not import, or it
            names no callable.
    """
    setups: list[HandlerSetup] = []
    for entry in entries:
        module_name, _, attribute = entry.partition(":")
        try:
            setup = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError("SILVERTINE_HANDLERS", entry,
                              f"module:function that imports ({exc})") from exc
        if not callable(setup):
            raise ConfigError("SILVERTINE_HANDLERS", entry, "module:function (a callable)")
        setups.append(setup)
    return setups
