"""The config file (``config/event_engine.yaml``): its keys, interpolation and settings source.

:mod:`silvertine_streams.settings` puts :class:`ConfigFileSource` between the
environment and the defaults; nothing here knows the settings fields' types.
"""

from __future__ import annotations

from silvertine_streams.configfile.interpolation import (
    InterpolationError,
    interpolate,
    interpolate_tree,
)
from silvertine_streams.configfile.keys import FIELD_KEYS, FILE_KEYS, flatten
from silvertine_streams.configfile.source import ConfigFileSource

__all__ = [
    "FIELD_KEYS",
    "FILE_KEYS",
    "ConfigFileSource",
    "InterpolationError",
    "flatten",
    "interpolate",
    "interpolate_tree",
]
