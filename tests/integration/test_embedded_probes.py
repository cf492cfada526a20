"""silvertine_streams.embedded.probes against real servers: a probe passes only when
its server answers a real request of its own protocol.

The test starts its own Tansu and redis-server (so it may change their
configuration) and stops them by PID.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from silvertine_streams.embedded.probes import kafka_probe, readiness_probe, redis_probe
from silvertine_streams.embedded.processes import LOOPBACK, pick_free_port, spawn
from silvertine_streams.embedded.servers import (
    KAFKA,
    REDIS,
    redis_server_binary,
    server_command,
    tansu_binary,
)
from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.settings import load_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def kafka_url(port: int) -> str:
    return f"kafka://{LOOPBACK}:{port}"


def redis_url(port: int) -> str:
    return f"redis://{LOOPBACK}:{port}/0"


def kafka_at(port: int) -> Callable[[], None]:
    return kafka_probe(load_settings(kafka_url=kafka_url(port), redis_url=redis_url(1)))


def redis_at(port: int) -> Callable[[], None]:
    return redis_probe(load_settings(kafka_url=kafka_url(1), redis_url=redis_url(port)))


def probe(name: str, port: int) -> Callable[[], None]:
    url = kafka_url(port) if name == KAFKA else redis_url(port)
    return readiness_probe(name, url, load_settings())


@dataclass
class Servers:
    kafka_port: int
    redis_port: int


def _start(name: str, binary: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = pick_free_port()
    (tmp / "redis").mkdir(exist_ok=True)
    argv, _, env = server_command(name, binary, port, tmp, tmp / f"{name}.log")
    return spawn(name, argv, tmp / f"{name}.out", env=env, die_with_parent=True), port


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("probes")
    started: list[subprocess.Popen[bytes]] = []
    try:
        kafka, kafka_port = _start(KAFKA, tansu_binary(), tmp)
        started.append(kafka)
        redis_server, redis_port = _start(REDIS, redis_server_binary(), tmp)
        started.append(redis_server)
        client = redis.Redis(host=LOOPBACK, port=redis_port, socket_connect_timeout=1.0)
        try:
            wait_for(client.ping, timeout=30, message="redis-server answers PING",
                     ignore=(redis.ConnectionError, redis.BusyLoadingError))
        finally:
            client.close()
        # Tansu accepts connections before it serves metadata: wait for the port only.
        wait_for(lambda: _connects(kafka_port), timeout=30, message="Tansu listens")
        yield Servers(kafka_port, redis_port)
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _connects(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=1.0).close()
    except OSError:
        return False
    return True


def test_the_probes_pass_once_their_servers_answer(servers: Servers) -> None:
    # Tansu may still be starting after its port opened: the probe is what says it is ready.
    wait_for(lambda: _passes(probe(KAFKA, servers.kafka_port)), timeout=30,
             message="the Kafka probe passes")
    probe(REDIS, servers.redis_port)()
    kafka_at(servers.kafka_port)()


async def test_the_kafka_probe_runs_from_inside_a_running_event_loop(servers: Servers) -> None:
    # asyncio.run would refuse to nest here; the probe runs its round trip on its own loop.
    wait_for(lambda: _passes(kafka_at(servers.kafka_port)), timeout=30,
             message="the Kafka probe passes inside a loop")


def test_the_kafka_probe_needs_a_kafka_answer_not_an_open_port(servers: Servers) -> None:
    # Redis accepts the connection but cannot answer a metadata request. (The
    # converse, PING to Tansu, is left out: redis-py retries its read timeouts for ~25 s.)
    with pytest.raises(Exception) as kafka_on_redis:  # noqa: PT011  # aiokafka's own errors
        probe(KAFKA, servers.redis_port)()
    assert "bootstrap" in str(kafka_on_redis.value)
    assert not isinstance(kafka_on_redis.value, EmbeddedServerError)  # "not yet", not fatal


def test_a_redis_without_aof_is_refused_for_good(servers: Servers) -> None:
    client = redis.Redis(host=LOOPBACK, port=servers.redis_port, socket_timeout=5.0)
    try:
        client.config_set("appendonly", "no")
        with pytest.raises(EmbeddedServerError) as refused:
            redis_at(servers.redis_port)()
        assert refused.value.server == REDIS
        assert "runs without AOF" in refused.value.reason
        assert "'no'" in refused.value.reason
    finally:
        client.config_set("appendonly", "yes")
        client.close()
    redis_at(servers.redis_port)()


def test_a_closed_port_fails_at_once_without_a_kafka_client() -> None:
    port = pick_free_port()
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        kafka_at(port)()
    assert time.monotonic() - started < 1.0


def test_a_listener_that_never_answers_is_not_a_ready_broker() -> None:
    with socket.create_server((LOOPBACK, 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(Exception) as failed:  # noqa: PT011  # aiokafka's own errors
            kafka_at(port)()
    assert "bootstrap" in str(failed.value)


def _passes(probe: object) -> bool:
    assert callable(probe)
    try:
        probe()
    except EmbeddedServerError:
        raise
    except Exception:  # noqa: BLE001  # any failure of a booting server means "not yet"
        return False
    return True
