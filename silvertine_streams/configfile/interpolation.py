"""``${VAR:default}`` in the config file's values, resolved from an environment (pure).

The rules, as the README states them:

* ``${VAR}`` is the variable's value; an unset variable is an error.
* ``${VAR:default}`` is the variable's value, or ``default`` when it is unset
  or empty (as the shell's ``${VAR:-default}``); ``default`` may be empty.
* ``$${`` is a literal ``${``; any other ``$`` is itself.
* A value of a mapping key that held a reference and comes out empty is
  dropped: the key counts as not set. So ``url: ${REDIS_URL:}`` means "the
  environment's ``REDIS_URL``, else unset" (unset URLs start the embedded stack).

Values stay text: a ``${PORT:9464}`` becomes ``"9464"``, which the setting's
own validation reads as it reads an environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["InterpolationError", "interpolate", "interpolate_tree"]

_TOKEN = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A value's ``${...}`` cannot be resolved.

    Attributes:
        key: the dotted path of the value in the file (empty for a bare string).
        reason: what is wrong, for a person.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Replace every ``${VAR}`` and ``${VAR:default}`` in ``text`` from ``environ``.

    Raises:
        InterpolationError: a reference is malformed, or names an unset
            variable and has no default.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group("body")
        if body is None:
            raise InterpolationError("", f"unclosed ${{ in {text!r}: write ${{VAR:default}}")
        name, has_default, default = body.partition(":")
        if not _NAME.fullmatch(name):
            raise InterpolationError("", f"${{{body}}}: {name!r} is no variable name")
        value = environ.get(name)
        if value:
            return value
        if has_default:
            return default
        if value is None:
            raise InterpolationError(
                "", f"{name} is not set (write ${{{name}:default}} for a default)")
        return value

    return _TOKEN.sub(replace, text)


def _has_reference(text: str) -> bool:
    return any(m.group(0) != "$${" for m in _TOKEN.finditer(text))


def interpolate_tree(tree: Any, environ: Mapping[str, str], key: str = "") -> Any:
    """Interpolate every string in a loaded YAML tree (mapping keys are left alone).

    A mapping value that held a reference and comes out empty is left out.

    Raises:
        InterpolationError: naming the dotted key of the first bad value.
    """
    if isinstance(tree, str):
        try:
            return interpolate(tree, environ)
        except InterpolationError as exc:
            raise InterpolationError(key, exc.reason) from None
    if isinstance(tree, list):
        return [interpolate_tree(item, environ, f"{key}[{i}]") for i, item in enumerate(tree)]
    if isinstance(tree, Mapping):
        resolved: dict[Any, Any] = {}
        for name, value in tree.items():
            path = f"{key}.{name}" if key else str(name)
            new = interpolate_tree(value, environ, path)
            if isinstance(value, str) and new == "" and _has_reference(value):
                continue  # ${VAR:} with VAR unset: the key is not set
            resolved[name] = new
        return resolved
    return tree
