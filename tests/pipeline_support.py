"""Fixtures for tests that run real workers: a broker of their own, and worker processes.

Each such test gets its own Tansu broker (it starts in milliseconds), so topics
start empty and no test re-reads another's messages; Redis is the session's,
flushed per test. Import the fixtures into a conftest with
``from tests.pipeline_support import *``.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.settings import Settings
from tests.logcheck import scrape
from tests.workers import WorkerProcess, free_port

__all__ = ["fresh_kafka", "pipeline_settings", "workers", "WorkerPool", "metrics_of"]


@pytest.fixture
def fresh_kafka(stack_settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings whose ``kafka_url`` is a Tansu broker started for this test alone."""
    own = stack_settings.model_copy(
        update={"kafka_url": None, "data_dir": tmp_path / "kafka-stack", "kafka_port": 0}
    )
    stack = EmbeddedStack(own, die_with_parent=True)
    settings = stack.up()
    try:
        yield settings
    finally:
        stack.down()


@pytest.fixture
async def pipeline_settings(
    fresh_kafka: Settings, tmp_path: Path, redis_client: object
) -> Settings:
    """Settings for a worker test: own broker, flushed Redis, own app id and data dir.

    The topics are declared here, before any test produces: Tansu would
    otherwise auto-create them with its own partition count.
    """
    settings = fresh_kafka.model_copy(
        update={
            "app_id": f"t-{uuid4().hex[:8]}",
            "data_dir": tmp_path / "worker-data",
            "partitions": 4,
            "metrics_port": 0,
            "session_timeout_s": 6.0,
            "rebalance_timeout_s": 2.0,
        }
    )
    await ensure_topics(settings)
    return settings


class WorkerPool:
    """The worker processes of one test; all stopped by PID at teardown."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[WorkerProcess] = []

    def start(self, settings: Settings | None = None, **extra_env: str) -> WorkerProcess:
        """Start one more worker (its own log file and metrics port)."""
        index = len(self.started)
        worker = WorkerProcess(
            settings or self.settings,
            self.log_dir / f"worker-{index}.log",
            metrics_port=free_port(),
            extra_env=dict(extra_env),
        ).start()
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        """Every worker's log tail, for assertion messages."""
        return "\n".join(f"--- worker {i} (pid {w.pid}) ---\n{w.log_tail()}"
                         for i, w in enumerate(self.started))

    def stop_all(self) -> None:
        """Stop every worker this pool started."""
        for worker in self.started:
            worker.stop()


@pytest.fixture
def workers(pipeline_settings: Settings, tmp_path: Path) -> Iterator[WorkerPool]:
    """A :class:`WorkerPool` for this test's settings."""
    pool = WorkerPool(pipeline_settings, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def metrics_of(worker: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape a worker's ``/metrics`` (empty when it does not answer yet)."""
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return scrape(response.read().decode())
    except OSError:
        return {}
