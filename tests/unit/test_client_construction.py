"""Every aiokafka and Redis client of the package is built by one of the two factories.

Kafka SASL/TLS and Redis ACL/TLS settings are then added in one place per kind
(``kafka/clients.py``, ``redis/clients.py``); a client built anywhere else
would silently connect without them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import parse_source

PACKAGE = Path(__file__).resolve().parents[2] / "silvertine_streams"

CONSTRUCTORS = frozenset({
    "AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "AIOKafkaClient",
    "Redis", "StrictRedis", "RedisCluster", "ConnectionPool", "BlockingConnectionPool",
})
"""Calls that build a client (``Redis(...)``, ``aioredis.Redis(...)``, …)."""
CLASS_FACTORIES = frozenset({"from_url", "from_pool"})
"""Calls that build one from a URL or pool (``Redis.from_url``, ``redis.asyncio.from_url``)."""

FACTORIES = frozenset({"kafka/clients.py", "redis/clients.py"})

ALLOWED: dict[str, str] = {
    # Wraps the connection pool of a client the factory built; opens nothing new.
    "replay/reader.py": "Redis",
}
"""Known exceptions: module (relative to the package) -> the one call it may make."""


def client_constructions(source: str) -> list[tuple[int, str]]:
    """Return ``(line, call)`` for every client construction in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(parse_source(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else "")
        if name in CONSTRUCTORS:
            found.append((node.lineno, name))
        elif name in CLASS_FACTORIES and isinstance(func, ast.Attribute):
            owner = func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else (
                owner.attr if isinstance(owner, ast.Attribute) else "?")
            found.append((node.lineno, f"{owner_name}.{name}"))
    return found


def package_constructions() -> dict[str, list[tuple[int, str]]]:
    """Client constructions per module of the package, outside the two factories."""
    result: dict[str, list[tuple[int, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module in FACTORIES:
            continue
        calls = client_constructions(path.read_text(encoding="utf-8"))
        if calls:
            result[module] = calls
    return result


def test_only_the_factories_build_clients() -> None:
    offending = {
        module: calls for module, calls in package_constructions().items()
        if any(call != ALLOWED.get(module) for _, call in calls)
    }
    assert not offending, (
        "build aiokafka clients with silvertine_streams.kafka.clients and Redis clients "
        f"with silvertine_streams.redis.clients; found (module: [(line, call)]): {offending}"
    )


def test_every_allowed_exception_is_still_needed() -> None:
    # A stale entry would let a new construction in that module pass unnoticed.
    found = package_constructions()
    stale = [module for module, call in ALLOWED.items()
             if call not in {c for _, c in found.get(module, [])}]
    assert not stale, f"remove {stale} from ALLOWED: they no longer build a client"


def test_the_factories_themselves_build_clients() -> None:
    # Guards the scan: were it blind, the tests above would pass for nothing.
    for module in FACTORIES:
        assert client_constructions((PACKAGE / module).read_text(encoding="utf-8")), module


@pytest.mark.parametrize("source, call", [
    ("AIOKafkaConsumer('t', bootstrap_servers=b)", "AIOKafkaConsumer"),
    ("aiokafka.AIOKafkaProducer(bootstrap_servers=b)", "AIOKafkaProducer"),
    ("AIOKafkaAdminClient(bootstrap_servers=b)", "AIOKafkaAdminClient"),
    ("aioredis.Redis.from_url(url)", "Redis.from_url"),
    ("Redis.from_url(url, socket_timeout=5)", "Redis.from_url"),
    ("redis.Redis(host='h')", "Redis"),
    ("aioredis.Redis(host='h')", "Redis"),
    ("redis.asyncio.from_url(url)", "asyncio.from_url"),
    ("ConnectionPool(host='h')", "ConnectionPool"),
])
def test_the_scan_finds_a_construction(source: str, call: str) -> None:
    assert client_constructions(f"x = 1\n{source}\n") == [(2, call)]


def test_the_scan_ignores_mentions_in_text() -> None:
    source = '"""Do not call Redis.from_url(url) or AIOKafkaConsumer(...)."""\n# Redis(x)\n'
    assert client_constructions(source) == []
