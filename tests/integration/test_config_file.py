"""``silvertine worker --config config/event_engine.yaml`` as a user runs it (issue #13).

Real worker processes (with their supervisor): the shipped file's
``redis.url: ${REDIS_URL:}`` takes the session's redis-server from ``REDIS_URL``
(no ``SILVERTINE_REDIS_URL`` is set), and an unknown key stops start-up in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from silvertine_streams.embedded.processes import die_with_parent_preexec
from silvertine_streams.events.codec import encode_event
from silvertine_streams.events.enums import OrderSide
from silvertine_streams.events.model import OrderEvent
from silvertine_streams.settings import Settings
from silvertine_streams.topics import ingress_stream
from tests.helpers import async_wait_for
from tests.logcheck import read_log
from tests.workers import free_port

pytestmark = pytest.mark.integration

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "event_engine.yaml"


def worker_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """No SILVERTINE_REDIS_URL: Redis comes only through the file's ${REDIS_URL:}."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("SILVERTINE_") and k not in ("REDIS_URL", "KAFKA_URL")}
    return {**clean,
            "REDIS_URL": str(settings.redis_url),
            "SILVERTINE_KAFKA_URL": str(settings.kafka_url),
            "SILVERTINE_APP_ID": settings.app_id,
            "SILVERTINE_DATA_DIR": str(tmp_path / "data"),
            "SILVERTINE_WEB_PORT": str(free_port()),
            "SILVERTINE_METRICS_PORT": "0",
            "SILVERTINE_SESSION_TIMEOUT_S": "6"}


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM the supervisor, wait under a deadline, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def test_a_worker_started_with_the_shipped_file_uses_redis_url_from_the_environment(
        pipeline_settings: Settings, redis_client: Redis, tmp_path: Path) -> None:
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "silvertine_streams", "worker", "--config", str(SHIPPED)],
            env=worker_env(pipeline_settings, tmp_path), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent_preexec(os.getpid()))
    try:
        order = OrderEvent(order_id="cfg-1", symbol="AAPL", side=OrderSide.BUY, quantity=1.0,
                           source="oms", sequence=1)
        # Into the ingress stream of *that* Redis: the worker mirrors it to Kafka and
        # logs it there only if it talks to the Redis REDIS_URL names.
        await redis_client.xadd(ingress_stream("order"), {"event": encode_event(order)})

        async def logged() -> bool:
            assert process.poll() is None, log_path.read_text(errors="replace")
            return any(e["event_id"] == str(order.event_id)
                       for e in await read_log(redis_client, "order"))

        await async_wait_for(logged, timeout=120, interval=0.2,
                             message="the order in log:order of REDIS_URL's Redis")
        # Both URLs set: no embedded server was started in the data dir.
        assert not (tmp_path / "data" / "run").exists()
    finally:
        stop(process)
    assert "Traceback" not in log_path.read_text(errors="replace")


def test_an_unknown_key_in_the_file_stops_start_up_naming_it(
        stack_settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "event_engine.yaml"
    text = SHIPPED.read_text()
    assert "\n  max_retries: 3\n" in text
    config.write_text(text.replace("\n  max_retries: 3\n", "\n  max_retrys: 3\n"))
    done = subprocess.run(
        [sys.executable, "-m", "silvertine_streams", "worker", "--config", str(config)],
        env=worker_env(stack_settings.model_copy(update={"app_id": "cfg-unknown"}), tmp_path),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert lines == [f"silvertine: {config}: redis.max_retrys is not a setting; did you mean "
                     "redis.max_retries? (the shipped config/event_engine.yaml lists every key)"]
    assert not (tmp_path / "data").exists()  # stopped before any server was started
