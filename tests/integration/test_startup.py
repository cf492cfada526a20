"""A worker's start-up as a user meets it: mistakes and missing servers end it in one line.

Real ``silvertine worker`` processes (with their supervisor) against the session's
redis-server and nothing on the Kafka side, or nothing at all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from silvertine_streams.settings import Settings
from tests.helpers import wait_for
from tests.pipeline_support import WorkerPool, metrics_of
from tests.workers import free_port

pytestmark = pytest.mark.integration

PASSWORD = "S3cretPW"


def start_worker(env: dict[str, str], tmp_path: Path, timeout: float = 90
                 ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``silvertine worker`` to its end; (the process, seconds it took)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SILVERTINE_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "silvertine_streams", "worker"],
        env={**clean, "SILVERTINE_DATA_DIR": str(tmp_path / "data"),
             "SILVERTINE_METRICS_PORT": "0", **env},
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return done, time.monotonic() - started


def lines_of(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def test_an_unreachable_redis_is_one_line_naming_it_without_the_password(tmp_path: Path) -> None:
    port = free_port()
    done, _ = start_worker({"SILVERTINE_REDIS_URL": f"redis://trader:{PASSWORD}@127.0.0.1:{port}/0"},
                           tmp_path)
    lines = lines_of(done)
    assert done.returncode == 3, lines
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], lines
    assert PASSWORD not in done.stdout + done.stderr
    assert not (tmp_path / "data").exists()  # no embedded stack was started


def test_an_unreachable_kafka_is_waited_for_then_one_line_and_no_restart(
        stack_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    done, took = start_worker({"SILVERTINE_REDIS_URL": str(stack_settings.redis_url),
                               "SILVERTINE_KAFKA_URL": f"kafka://127.0.0.1:{port}",
                               "SILVERTINE_STARTUP_WAIT_S": "2"}, tmp_path)
    lines = lines_of(done)
    assert done.returncode == 3, lines
    assert len(lines) == 1 and f"kafka://127.0.0.1:{port}" in lines[0], lines
    assert "restarting" not in lines[0] and "Traceback" not in done.stderr
    assert took >= 2.0  # it waited for the server as asked


def test_only_one_server_url_is_refused_not_silently_embedded(
        stack_settings: Settings, tmp_path: Path) -> None:
    done, _ = start_worker({"SILVERTINE_REDIS_URL": str(stack_settings.redis_url)}, tmp_path)
    lines = lines_of(done)
    assert done.returncode == 2, lines
    assert len(lines) == 1 and "SILVERTINE_KAFKA_URL" in lines[0], lines
    assert not (tmp_path / "data").exists()


def test_a_misspelt_url_variable_is_refused_with_the_right_name(tmp_path: Path) -> None:
    done, _ = start_worker({"SILVERTINE_REDIS_ULR": f"redis://u:{PASSWORD}@127.0.0.1:1/0"},
                           tmp_path)
    lines = lines_of(done)
    assert done.returncode == 2
    assert lines == ["silvertine: SILVERTINE_REDIS_ULR is not a setting; did you mean "
                     "SILVERTINE_REDIS_URL? (see the README's settings table)"]
    assert not (tmp_path / "data").exists()


def children_of(pid: int) -> list[int]:
    """The PIDs of ``pid``'s children (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def test_a_worker_that_crashes_after_starting_is_restarted_and_counted(
        workers: WorkerPool) -> None:
    worker = workers.start()

    def restarts() -> float | None:
        return metrics_of(worker).get(("silvertine_worker_restarts_total", ()))

    wait_for(lambda: restarts() == 0.0, timeout=60,
             message=f"the worker to start and serve its metrics\n{workers.logs()}")
    [child] = children_of(worker.pid)
    os.kill(child, signal.SIGKILL)  # the Faust worker itself, not the supervisor
    wait_for(lambda: restarts() == 1.0, timeout=90,
             message=f"the supervisor to restart the worker\n{workers.logs()}")
    assert worker.alive()
    [again] = children_of(worker.pid)
    assert again != child
    assert "worker exited with status 137; restarting in 1s" in worker.log_path.read_text()


async def test_a_redis_that_may_evict_is_refused_unless_allowed(
        stack_settings: Settings, redis_client: Redis, tmp_path: Path) -> None:
    port = free_port()
    env = {"SILVERTINE_REDIS_URL": str(stack_settings.redis_url),
           "SILVERTINE_KAFKA_URL": f"kafka://127.0.0.1:{port}"}
    # The session's Redis, changed for this test only and put back whatever happens.
    await redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        refused, _ = await asyncio.to_thread(start_worker, env, tmp_path)
        allowed, _ = await asyncio.to_thread(
            start_worker, {**env, "SILVERTINE_ALLOW_UNSAFE_REDIS": "true"}, tmp_path)
    finally:
        await redis_client.config_set("maxmemory-policy", "noeviction")
    lines = lines_of(refused)
    assert refused.returncode == 2, lines
    assert len(lines) == 1 and "maxmemory-policy 'allkeys-lru'" in lines[0], lines
    assert "SILVERTINE_ALLOW_UNSAFE_REDIS" in lines[0]
    # Allowed: a warning, then it goes on to Kafka (absent here: status 3).
    lines = lines_of(allowed)
    assert allowed.returncode == 3, lines
    assert lines[0].startswith("silvertine: warning:") and "maxmemory-policy" in lines[0]
