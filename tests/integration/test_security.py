"""Secure transport end to end: a worker, the Publisher and the operator tools over TLS.

Against real servers on loopback: redis-server with TLS only, client
certificates required and the README's ACL users; a Tansu broker reached over
TLS (through ``tests.tls_proxy``: the Tansu we ship cannot serve TLS itself),
and one with ``--authentication`` (SASL). Certificates are made per session
with trustme.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from silvertine_streams import MarketDataEvent, Publisher
from silvertine_streams.errors import CredentialsRefused, ServerUnavailable
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.kafka.clients import check_kafka_login, kafka_consumer
from silvertine_streams.settings import Settings, settings_env
from silvertine_streams.topics import handler_progress, log_stream
from tests.helpers import async_wait_for
from tests.tls_support import (
    READER_PASSWORD,
    READER_USER,
    Pki,
    TlsKafka,
    TlsRedis,
    secure_settings,
    start_tls_kafka,
    stop,
)
from tests.workers import WorkerProcess, free_port

pytestmark = pytest.mark.integration

EVENTS = 60
DEADLINE_S = 120.0


def run_cli(settings: Settings, *args: str, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
    """Run ``silvertine <args>`` with exactly ``settings`` in its environment."""
    return subprocess.run([sys.executable, "-m", "silvertine_streams", *args],
                          env=settings_env(settings, os.environ), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def lines_of(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


async def test_a_worker_logs_over_tls_what_the_publisher_sends_over_tls(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis, tls_kafka: TlsKafka,
        tls_admin: Redis) -> None:
    # With a handler group and retention rounds too: their keys, scripts and
    # commands (TIME) must be within the README's worker ACL.
    settings = secure_settings(tmp_path, pki, tls_redis, tls_kafka,
                               handlers=("tests.handler_fixtures:count_market_data",),
                               log_retention={"market_data": 3600.0}, retention_interval_s=0.2)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log", metrics_port=free_port(),
                           extra_env={"PYTHONPATH": os.getcwd()}).start()
    try:
        events = [MarketDataEvent(symbol=f"SYM{i % 5}", price=100.0 + i, source="tls-test")
                  for i in range(EVENTS)]
        async with Publisher(settings) as publisher:
            await publisher.publish_many(events)

        async def logged() -> bool:
            return await tls_admin.xlen(log_stream("market_data")) == EVENTS

        await async_wait_for(logged, timeout=DEADLINE_S, interval=0.2,
                             message=f"the worker to log {EVENTS} events\n{worker.log_tail()}")

        async def handled() -> bool:
            done = await tls_admin.hget(handler_progress(settings.app_id), "market_data")
            return int(done or 0) == EVENTS

        await async_wait_for(handled, timeout=DEADLINE_S, interval=0.2,
                             message=f"the handler group to finish {EVENTS} entries\n"
                             f"{worker.log_tail()}")
        assert worker.alive(), worker.log_tail()
        # The operators' settings: the read-only ACL user. The monitor needs no Redis at all.
        reader = secure_settings(tmp_path, pki, tls_redis, tls_kafka, user=READER_USER,
                                 password=READER_PASSWORD)
        monitored = run_cli(reader, "monitor", "--once", "--url",
                            f"http://127.0.0.1:{worker.metrics_port}/metrics")
        assert monitored.returncode == 0, monitored.stdout + monitored.stderr
        assert "market_data" in monitored.stdout
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "NOPERM" not in log and "Traceback" not in log, log[-4000:]
    assert "S3cretPW" not in log
    ids = {event.event_id for event in events}

    # The operator tools as the read-only ACL user: replay to stdout, audit, dlq list.
    replayed = run_cli(reader, "replay", "--type", "market_data", "--to", "print",
                       "--no-progress")
    assert replayed.returncode == 0, replayed.stderr
    assert {line for line in replayed.stdout.splitlines() if line.strip()} and all(
        event_id in replayed.stdout for event_id in ids)
    audited = run_cli(reader, "audit", events[7].event_id, "--json")
    assert audited.returncode == 0, audited.stderr
    assert events[7].event_id in audited.stdout and '"kafka_timestamp_ms": null' not in \
        audited.stdout  # it found the event's Kafka record too, over TLS
    listed = run_cli(reader, "dlq", "list")
    assert listed.returncode == 0, listed.stderr

    # Replay into a topic: Redis read as the reader, Kafka written over TLS.
    topic = f"replay-{uuid4().hex[:6]}"
    to_topic = run_cli(reader, "replay", "--type", "market_data", "--to", f"topic:{topic}", "--yes",
                       "--no-progress")
    assert to_topic.returncode == 0, to_topic.stderr
    assert await count_records(settings, topic) == EVENTS


async def count_records(settings: Settings, topic: str) -> int:
    """Events in ``topic`` (values may be envelopes: JSON arrays), read over the settings' TLS."""
    import json

    consumer = kafka_consumer(settings, topic, role="test-count")
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value)
                    seen += len(value) if isinstance(value, list) else 1
            if seen >= EVENTS and not batch:
                break
        return seen
    finally:
        await consumer.stop()


async def test_the_read_only_user_cannot_write(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis, tls_admin: Redis) -> None:
    from redis.exceptions import NoPermissionError

    from silvertine_streams.redis.clients import redis_client

    reader = secure_settings(tmp_path, pki, tls_redis, None, user=READER_USER,
                             password=READER_PASSWORD)
    client = redis_client(reader, role="test-reader")
    try:
        assert await client.xlen(log_stream("order")) == 0
        with pytest.raises(NoPermissionError):
            await client.xadd(log_stream("order"), {"event": "{}"})
        with pytest.raises(NoPermissionError):
            await client.delete("dlq")
    finally:
        await client.aclose()


def test_a_wrong_redis_password_is_one_line_naming_the_server_and_status_4(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis, tls_kafka: TlsKafka) -> None:
    wrong = secure_settings(tmp_path, pki, tls_redis, tls_kafka, password="S3cretPW-wrong")
    done = run_cli(wrong, "worker")
    lines = lines_of(done)
    assert done.returncode == 4, lines
    assert len(lines) == 1 and f"127.0.0.1:{tls_redis.port}" in lines[0], lines
    assert "S3cretPW" not in done.stdout + done.stderr


def test_a_refused_kafka_sasl_login_is_one_line_naming_the_broker_and_status_4(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis) -> None:
    # Tansu 0.6.0 with --authentication offers SCRAM-SHA-256/512, but its memory
    # storage keeps no users: every SCRAM login is refused (and PLAIN is not offered).
    broker, procs = start_tls_kafka(tmp_path / "sasl-kafka", pki, authentication=True)
    try:
        refused = secure_settings(
            tmp_path, pki, tls_redis, broker, kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="engine",
            kafka_sasl_password="S3cretPW-kafka")
        done = run_cli(refused, "worker")
    finally:
        for proc in reversed(procs):
            stop(proc)
    lines = lines_of(done)
    assert done.returncode == 4, lines
    assert len(lines) == 1 and f"kafka://127.0.0.1:{broker.tls_port}" in lines[0], lines
    assert "SCRAM-SHA-512 login as 'engine' refused" in lines[0]
    assert "S3cretPW" not in done.stdout + done.stderr


async def test_tls_verifies_the_chain_and_the_host_name(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis, tls_kafka: TlsKafka) -> None:
    good = secure_settings(tmp_path, pki, tls_redis, tls_kafka)
    await check_kafka_login(good)
    stranger = good.model_copy(update={"kafka_ssl_cafile": pki.other_ca})
    with pytest.raises(ServerUnavailable, match="certificate verify failed"):
        await check_kafka_login(stranger, timeout_s=5)
    plaintext = good.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    with pytest.raises(ServerUnavailable):
        await check_kafka_login(plaintext, timeout_s=3)

    # A broker whose certificate names another host: refused unless the name check is off.
    elsewhere, procs = start_tls_kafka(tmp_path / "other-host", pki,
                                       server_cert=pki.other_host_cert,
                                       server_key=pki.other_host_key)
    try:
        named = good.model_copy(update={"kafka_url": elsewhere.url})
        with pytest.raises(ServerUnavailable, match="certificate verify failed"):
            await check_kafka_login(named, timeout_s=5)
        await check_kafka_login(named.model_copy(update={"kafka_ssl_check_hostname": False}))
    finally:
        for proc in reversed(procs):
            stop(proc)


async def test_redis_tls_needs_our_ca_and_a_client_certificate(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis) -> None:
    from silvertine_streams.cli.startup import _ping_redis

    good = secure_settings(tmp_path, pki, tls_redis, None)
    assert (await _ping_redis(good))["aof_enabled"] == 1
    for update in ({"redis_ssl_cafile": pki.other_ca},
                   {"redis_ssl_certfile": None, "redis_ssl_keyfile": None},
                   {"redis_url": f"redis://127.0.0.1:{tls_redis.port}/0"}):
        with pytest.raises(ServerUnavailable) as caught:
            await asyncio.wait_for(_ping_redis(good.model_copy(update=update)), 30)
        assert f"127.0.0.1:{tls_redis.port}" in str(caught.value)
    with pytest.raises(CredentialsRefused):
        await _ping_redis(secure_settings(tmp_path, pki, tls_redis, None, password="nope"))
    # redis-py leaves a connection unclosed when its handshake fails with an error
    # other than a RedisError (here: plaintext to a TLS port). Collect it now: its
    # ResourceWarning, raised later inside pytest's own ast.parse, trips a CPython
    # 3.11 bug ("AST constructor recursion depth mismatch") that fails the run.
    gc.collect()
