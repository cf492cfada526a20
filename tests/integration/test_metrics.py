"""A real worker's ``/metrics``: it parses, and its counters agree with Redis.

Also the consumers of those metrics: ``silvertine monitor --once`` against the
worker, and the Grafana dashboard, whose queries may name only metrics the
engine exports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from silvertine_streams.events import Event, MarketDataEvent, OrderEvent, OrderSide
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.observability.metrics import REGISTRY
from silvertine_streams.settings import Settings, settings_env
from silvertine_streams.topics import DLQ_STREAM, EVENT_TYPES, event_topic, log_stream
from tests.helpers import async_wait_for
from tests.pipeline_support import WorkerPool
from tests.workers import WorkerProcess

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/silvertine.json"
# Panels kept ready for metrics that other parts of the engine export when enabled.
RESERVED = {"silvertine_lane_lag", "silvertine_shed_events_total",
            "silvertine_clock_offset_seconds", "silvertine_clock_synchronised",
            "silvertine_stage_latency_seconds_bucket"}


def scrape(worker: WorkerProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Read and parse the worker's /metrics with prometheus_client's own parser."""
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return samples


def total(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
    return sum(samples.get(name, {}).values())


async def test_metrics_parse_and_counters_match_the_log_and_the_dlq(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    ticks: list[Event] = [MarketDataEvent(symbol=s, price=100.0 + i, source="feed", sequence=i)
                          for i in range(1, 101) for s in ("AAPL", "MSFT", "NVDA")]
    orders: list[Event] = [OrderEvent(order_id=f"o-{i}", symbol="AAPL", side=OrderSide.BUY,
                                      quantity=1, source="oms") for i in range(20)]
    bad = [b'{"event_type":"market_data","symbol":"AAPL","price":-5}',
           b'{"event_type":"order","symbol":"AAPL"}', b"not json"]
    worker = workers.start()
    async with Publisher(pipeline_settings) as publisher:
        await publisher.publish_many(ticks + orders)
    producer = AIOKafkaProducer(bootstrap_servers=pipeline_settings.kafka_bootstrap)
    await producer.start()
    try:
        for value in bad:
            await producer.send_and_wait(event_topic("market_data"), value=value, key=b"AAPL")
    finally:
        await producer.stop()

    async def settled() -> bool:
        logged = sum([await redis_client.xlen(log_stream(t)) for t in EVENT_TYPES])
        dead = await redis_client.xlen(DLQ_STREAM)
        if logged < len(ticks) + len(orders) or dead < len(bad):
            return False
        try:
            samples = scrape(worker)
        except OSError:
            return False
        return (total(samples, "silvertine_events_logged_total") == logged
                and total(samples, "silvertine_dead_letters_total") == dead)

    try:
        await async_wait_for(settled, timeout=60, interval=0.2, message="metrics match Redis")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from None

    samples = scrape(worker)
    for event_type in EVENT_TYPES:
        labels = (("event_type", event_type),)
        assert samples["silvertine_events_logged_total"].get(labels, 0.0) == (
            await redis_client.xlen(log_stream(event_type))), event_type
    assert total(samples, "silvertine_dead_letters_total") == await redis_client.xlen(DLQ_STREAM)
    assert total(samples, "silvertine_events_in_total") == len(ticks) + len(orders) + len(bad)
    assert total(samples, "silvertine_dedupe_hits_total") == 0
    assert total(samples, "silvertine_sink_latency_seconds_count") >= 1
    assert samples["silvertine_dead_letters_total"][
        (("event_type", "market_data"), ("reason", "invalid"))] == len(bad)

    # The monitor reads the same endpoint.
    once = subprocess.run(
        [sys.executable, "-m", "silvertine_streams", "monitor", "--once", "--interval", "0.5",
         "--url", f"http://127.0.0.1:{worker.metrics_port}/metrics"],
        env=settings_env(pipeline_settings, os.environ), capture_output=True, text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stdout + once.stderr
    lines = once.stdout.splitlines()
    row = next(line.split() for line in lines if line.strip().startswith("market_data"))
    assert row[1] == f"{len(ticks) + len(bad):,}"  # in
    assert row[3] == f"{len(ticks):,}"  # logged
    assert row[5] == f"{len(bad):,}"  # dlq
    assert any(re.match(r"\s+market_data\s+invalid\s+3$", line) for line in lines), lines
    assert re.search(r"rates over \d+\.\ds", once.stdout), once.stdout


def test_monitor_once_says_when_nothing_answers(pipeline_settings: Settings) -> None:
    once = subprocess.run(
        [sys.executable, "-m", "silvertine_streams", "monitor", "--once", "--interval", "0",
         "--url", "http://127.0.0.1:9/metrics"],
        env=settings_env(pipeline_settings, os.environ), capture_output=True, text=True,
        timeout=60,
    )
    assert once.returncode == 1
    assert "ERROR http://127.0.0.1:9/metrics" in once.stdout


def test_grafana_dashboard_queries_name_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = {"silvertine_sink_retries_total"}  # registered when a worker builds its sinks
    for family in REGISTRY.collect():
        if family.type == "counter":
            exported.add(f"{family.name}_total")
        elif family.type == "histogram":
            exported.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            exported.add(family.name)

    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for t in targets for name in re.findall(r"silvertine_[a-z_]+", t["expr"])}
    assert used - exported - RESERVED == set()
    for needed in ("silvertine_events_in_total", "silvertine_events_logged_total",
                   "silvertine_dead_letters_total", "silvertine_dedupe_hits_total",
                   "silvertine_sequence_gaps_total", "silvertine_sequence_stale_total",
                   "silvertine_sink_batch_size_bucket", "silvertine_sink_latency_seconds_bucket",
                   "silvertine_sink_retries_total", "silvertine_handler_calls_total",
                   "silvertine_handler_failures_total", "silvertine_circuit_open",
                   *RESERVED):
        assert needed in used, needed
    sources = {json.dumps(p.get("datasource")) for p in dashboard["panels"] if "datasource" in p}
    sources |= {json.dumps(t["datasource"]) for t in targets}
    assert sources == {json.dumps({"type": "prometheus", "uid": "prometheus"})}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
