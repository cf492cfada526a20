"""silvertine-streams: the event core of the Silvertine trading platform.

The names users import live here (``from silvertine_streams import Publisher``);
they load on first use, so importing the package stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Publisher": "silvertine_streams.kafka.publisher",
    "EventBus": "silvertine_streams.handlers",
    "HandlerPriority": "silvertine_streams.handlers",
    "HandlerRegistry": "silvertine_streams.handlers",
    "RedisStreamManager": "silvertine_streams.redis.streams",
    "EventProcessor": "silvertine_streams.agents.processor",
    "EventMonitor": "silvertine_streams.observability.event_monitor",
    "Settings": "silvertine_streams.settings",
    "load_settings": "silvertine_streams.settings",
    "create_app": "silvertine_streams.app",
    "Event": "silvertine_streams.events",
    "EventType": "silvertine_streams.events",
    "MarketDataEvent": "silvertine_streams.events",
    "OrderEvent": "silvertine_streams.events",
    "FillEvent": "silvertine_streams.events",
    "SignalEvent": "silvertine_streams.events",
    "SystemEvent": "silvertine_streams.events",
    "SilvertineError": "silvertine_streams.errors",
}

MOVED_MODULES = {
    "silvertine_streams.publisher": "silvertine_streams.kafka.publisher",
    "silvertine_streams.domain.handlers": "silvertine_streams.handlers",
}
"""Import paths earlier READMEs showed, and where those modules live now."""

__all__ = ["MOVED_MODULES", "__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'silvertine_streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


class _MovedModuleLoader(importlib.abc.Loader):
    """Serves an old import path with the module that now lives elsewhere."""

    def __init__(self, target: str) -> None:
        self._target = target

    def exec_module(self, module: ModuleType) -> None:
        """Fill the alias with the target's names (the same objects, not copies)."""
        target = importlib.import_module(self._target)
        module.__dict__.update(
            (name, value) for name, value in vars(target).items() if not name.startswith("__")
        )


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old import paths of :data:`MOVED_MODULES`, so user code keeps working."""

    def find_spec(self, fullname: str, path: Any = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        moved_to = MOVED_MODULES.get(fullname)
        if moved_to is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(moved_to))


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())
