"""The package's public face: the names users import, and import paths of earlier releases."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import silvertine_streams

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("name", sorted(silvertine_streams._PUBLIC))
def test_every_public_name_loads_from_its_module(name: str) -> None:
    value = getattr(silvertine_streams, name)
    assert value is getattr(importlib.import_module(silvertine_streams._PUBLIC[name]), name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        silvertine_streams.Nope  # noqa: B018 - the access is the test


@pytest.mark.parametrize(("old", "new"), sorted(silvertine_streams.MOVED_MODULES.items()))
def test_moved_modules_keep_their_old_import_path(old: str, new: str) -> None:
    # A fresh interpreter: the alias must work as the first import a user makes.
    code = (f"import importlib; old = importlib.import_module({old!r}); "
            f"new = importlib.import_module({new!r}); "
            "names = [n for n in vars(new) if not n.startswith('_')]; "
            "assert names and all(getattr(old, n) is getattr(new, n) for n in names), names")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_readme_imports_work() -> None:
    """Every ``from silvertine_streams… import …`` line in the README imports."""
    lines = re.findall(r"^\s*(from silvertine_streams[\w.]* import [\w, ]+)$",
                       README.read_text(), flags=re.M)
    assert len(lines) >= 3
    for line in lines:
        exec(line, {})  # noqa: S102 - our own README's import lines


def test_the_top_level_holds_only_the_public_face() -> None:
    top = {p.name for p in Path(silvertine_streams.__file__).parent.glob("*.py")}
    assert top == {"__init__.py", "__main__.py", "app.py", "settings.py", "errors.py",
                   "topics.py"}
