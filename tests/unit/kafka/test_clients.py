"""The Kafka client factory passes the settings through: checked on built clients, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from silvertine_streams.errors import ConfigError
from silvertine_streams.kafka.clients import (
    ADMIN_REQUEST_TIMEOUT_MS,
    client_id,
    kafka_admin,
    kafka_consumer,
    kafka_credentials,
    kafka_producer,
    kafka_security,
)
from silvertine_streams.settings import Settings


def settings(**changes: object) -> Settings:
    """Settings that name servers nobody connects to (clients connect on first use)."""
    base = Settings(kafka_url="kafka://k1:9092;k2:9093", redis_url="redis://r1:6380/3")
    return base.model_copy(update=changes)


async def test_producer_gets_servers_client_id_security_and_durable_defaults() -> None:
    producer = kafka_producer(settings(), role="publisher", linger_ms=7)
    try:
        assert producer.client._bootstrap_servers == ["k1:9092", "k2:9093"]
        assert producer.client._client_id == "silvertine-publisher"
        assert producer.client._security_protocol == "PLAINTEXT"
        assert producer._sender._acks == -1  # "all"; aiokafka's own default is 1
        assert producer._txn_manager is None  # no idempotence: Tansu refuses it
        assert producer._message_accumulator._linger_time == pytest.approx(0.007)
    finally:
        await producer.stop()


async def test_compression_follows_the_setting_for_our_producers_and_fausts() -> None:
    plain = kafka_producer(settings(), role="publisher")
    packed = kafka_producer(settings(kafka_compression="gzip"), role="publisher")
    try:
        assert plain._compression_type is None
        assert packed._compression_type == "gzip"
    finally:
        await plain.stop()
        await packed.stop()
    from silvertine_streams.app import create_app

    assert create_app(settings(kafka_compression="gzip")).conf.producer_compression_type == "gzip"
    assert create_app(settings()).conf.producer_compression_type is None


async def test_consumer_defaults_to_no_group_no_commits_and_the_settings_fetch_wait() -> None:
    consumer = kafka_consumer(settings(fetch_wait_ms=37), "silvertine.order", role="lag")
    try:
        assert consumer._client._bootstrap_servers == ["k1:9092", "k2:9093"]
        assert consumer._client._client_id == "silvertine-lag"
        assert consumer._client._security_protocol == "PLAINTEXT"
        assert consumer._group_id is None
        assert consumer._enable_auto_commit is False
        assert consumer._auto_offset_reset == "earliest"
        assert consumer._fetch_max_wait_ms == 37
        assert consumer.subscription() == {"silvertine.order"}
    finally:
        await consumer.stop()


async def test_consumer_overrides_win_over_the_defaults() -> None:
    consumer = kafka_consumer(settings(), role="rewind", group_id="g-1", fetch_max_wait_ms=10)
    try:
        assert consumer._group_id == "g-1"
        assert consumer._fetch_max_wait_ms == 10
        assert consumer.subscription() == set()
    finally:
        await consumer.stop()


async def test_admin_gets_servers_client_id_and_a_short_request_timeout() -> None:
    admin = kafka_admin(settings(), role="topics")
    try:
        assert admin._client._bootstrap_servers == ["k1:9092", "k2:9093"]
        assert admin._client._client_id == "silvertine-topics"
        assert admin._client._security_protocol == "PLAINTEXT"
        assert admin._request_timeout_ms == ADMIN_REQUEST_TIMEOUT_MS
    finally:
        await admin.close()
    admin = kafka_admin(settings(), role="probe", request_timeout_ms=2_000)
    try:
        assert admin._request_timeout_ms == 2_000
    finally:
        await admin.close()


@pytest.mark.parametrize(
    "override", ["bootstrap_servers", "client_id", "security_protocol", "ssl_context",
                 "sasl_plain_password"]
)
async def test_no_caller_may_set_servers_or_security(override: str) -> None:
    with pytest.raises(TypeError, match=override):
        kafka_producer(settings(), role="x", **{override: "anything"})


async def test_kafka_clients_need_a_kafka_url() -> None:
    with pytest.raises(ConfigError) as caught:
        kafka_admin(settings(kafka_url=None), role="topics")
    assert caught.value.setting == "SILVERTINE_KAFKA_URL"


@pytest.mark.parametrize("role", ["", "has space", "a:b", "ü"])
def test_a_role_is_a_plain_name(role: str) -> None:
    with pytest.raises(ValueError, match="client role"):
        client_id(role)


def test_kafka_security_is_fausts_translation_of_the_credentials() -> None:
    # The worker (Faust) gets kafka_credentials; our clients get kafka_security.
    # They must say the same, today and once SASL/TLS fill in the credentials.
    s = settings()
    assert kafka_credentials(s) is None
    assert kafka_security(s) == {"security_protocol": "PLAINTEXT"}
    assert kafka_security(s) == dict(credentials_to_aiokafka_auth(kafka_credentials(s)))


def test_the_worker_app_gets_the_same_credentials_and_names_itself(tmp_path: Path) -> None:
    from silvertine_streams.app import create_app

    app = create_app(settings(data_dir=tmp_path))
    assert app.conf.broker_credentials is None  # PLAINTEXT, as kafka_credentials says
    assert app.conf.broker_client_id == "silvertine-worker"
