"""The config file as a pydantic-settings source: YAML safely loaded, interpolated, flattened.

:class:`ConfigFileSource` is pydantic-settings' own ``YamlConfigSettingsSource``
(``yaml.safe_load``, one file) with three steps added between loading and
validation: ``${VAR:default}`` interpolation, the refusal of unknown keys, and
the mapping of the file's sections onto the flat settings fields
(:data:`~silvertine_streams.configfile.keys.FILE_KEYS`). Where it stands
among the sources (environment over file over defaults) is
``Settings.settings_customise_sources``'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic_settings import YamlConfigSettingsSource

from silvertine_streams.configfile.interpolation import InterpolationError, interpolate_tree
from silvertine_streams.configfile.keys import BadSection, UnknownKey, flatten
from silvertine_streams.errors import ConfigFileError, UnknownConfigKey

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from pydantic_settings import BaseSettings

__all__ = ["ConfigFileSource"]


class ConfigFileSource(YamlConfigSettingsSource):
    """The settings one config file sets, as ``{field: value}``.

    Attributes:
        path: the file.
        values: what the file sets, by field name (before validation).
    """

    def __init__(self, settings_cls: type[BaseSettings], path: Path,
                 environ: Mapping[str, str]) -> None:
        """Read ``path`` now, interpolating from ``environ``.

        Raises:
            ConfigFileError: the file cannot be read or parsed, a ``${...}``
                cannot be resolved, or a section is not a mapping.
            UnknownConfigKey: a key is no setting (naming the closest one).
        """
        self.path = path
        self._environ = environ
        if not path.is_file():
            # pydantic-settings skips a missing file silently; a named one must exist.
            raise ConfigFileError(path, "", None, "a YAML file",
                                  problem="no such file")
        super().__init__(settings_cls, yaml_file=path, yaml_file_encoding="utf-8")
        self.values: dict[str, Any] = dict(self.yaml_data)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            loaded = super()._read_file(file_path)  # yaml.safe_load
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(self.path, "", None, "a YAML file",
                                  problem=f"cannot be read ({exc})") from exc
        except yaml.YAMLError as exc:
            raise ConfigFileError(self.path, "", None, "a YAML file",
                                  problem=f"is not YAML ({_where(exc)})") from exc
        try:
            return flatten(interpolate_tree(loaded, self._environ))
        except InterpolationError as exc:
            raise ConfigFileError(self.path, exc.key, None, "${VAR} or ${VAR:default}",
                                  problem=exc.reason) from exc
        except UnknownKey as exc:
            raise UnknownConfigKey(self.path, exc.key, exc.closest) from exc
        except BadSection as exc:
            if not exc.key:
                raise ConfigFileError(self.path, "", None, "sections of keys", problem=(
                    f"holds a {type(exc.value).__name__}, not sections of keys")) from exc
            # Not the value itself: a section mistaken for a key may hold a password.
            raise ConfigFileError(self.path, exc.key, type(exc.value).__name__,
                                  "a section of key: value lines") from exc


def _where(exc: yaml.YAMLError) -> str:
    """Where and what the YAML error is, without quoting the line (it may hold a secret)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
