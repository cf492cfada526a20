"""The architecture, checked from the code's imports: rooms side by side, a pure core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import parse_source

PACKAGE = Path(__file__).resolve().parents[2] / "silvertine_streams"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(parse_source(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules_in(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py"))


def test_no_operator_tool_imports_another() -> None:
    tools = {p.stem for p in modules_in("ops") if p.stem != "__init__"}
    for path in modules_in("ops"):
        others = {f"silvertine_streams.ops.{t}" for t in tools - {path.stem}}
        assert not imports_of(path) & others, path.name


@pytest.mark.parametrize(("room", "forbidden"), [
    ("replay", ("silvertine_streams.agents", "silvertine_streams.ops", "silvertine_streams.cli")),
    ("handlers", ("silvertine_streams.agents", "silvertine_streams.ops")),
    ("sinks", ("silvertine_streams.agents", "silvertine_streams.ops", "silvertine_streams.replay")),
    ("domain", ("faust", "redis", "aiokafka", "asyncio", "ntplib", "silvertine_streams.agents",
                "silvertine_streams.sinks", "silvertine_streams.handlers")),
    ("events", ("faust", "redis", "aiokafka", "asyncio", "silvertine_streams.agents")),
])
def test_rooms_do_not_reach_upwards(room: str, forbidden: tuple[str, ...]) -> None:
    for path in modules_in(room):
        bad = {name for name in imports_of(path)
               if any(name == f or name.startswith(f + ".") for f in forbidden)}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
