"""The Redis client factory passes the settings through: checked on built clients, no server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from silvertine_streams.errors import ConfigError
from silvertine_streams.redis import clients as redis_clients
from silvertine_streams.redis.clients import client_name, redis_client
from silvertine_streams.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def settings(**changes: object) -> Settings:
    """Settings that name servers nobody connects to (clients connect on first use)."""
    base = Settings(kafka_url="kafka://k1:9092;k2:9093", redis_url="redis://r1:6380/3")
    return base.model_copy(update=changes)


def test_redis_client_carries_the_url_timeouts_retry_health_check_and_name() -> None:
    client = redis_client(settings(), role="worker")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("r1", 6380, 3)
    assert kwargs["socket_timeout"] == redis_clients.COMMAND_TIMEOUT_S == 5.0
    assert kwargs["socket_connect_timeout"] == redis_clients.CONNECT_TIMEOUT_S
    assert kwargs["health_check_interval"] == redis_clients.HEALTH_CHECK_INTERVAL_S
    assert kwargs["decode_responses"] is False
    assert kwargs["client_name"] == f"silvertine:worker:{socket.gethostname()}:{os.getpid()}"
    retry = kwargs["retry"]
    assert retry.get_retries() == redis_clients.RETRIES == 2
    # Connection errors only: a timed-out command may have run, and is the caller's call.
    assert retry._supported_errors == (RedisConnectionError,)
    assert not issubclass(RedisTimeoutError, retry._supported_errors)


def test_redis_long_reads_and_decoding_are_parameters() -> None:
    client = redis_client(settings(), role="cli", read_timeout_s=30.0, decode_responses=True)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 30.0
    assert kwargs["socket_connect_timeout"] == redis_clients.CONNECT_TIMEOUT_S
    assert kwargs["decode_responses"] is True


def test_redis_credentials_and_tls_come_from_the_url() -> None:
    client = redis_client(settings(redis_url="rediss://app:s3cret@r2:6390/1"), role="worker")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("app", "s3cret")
    assert client.connection_pool.connection_class is SSLConnection
    assert redis_clients.redis_security(settings()) == {}


@pytest.mark.parametrize("role", ["", "has space", "a:b", "ü"])
def test_a_role_is_a_plain_name(role: str) -> None:
    with pytest.raises(ValueError, match="client role"):
        client_name(role)


def test_redis_client_needs_a_redis_url() -> None:
    with pytest.raises(ConfigError) as caught:
        redis_client(settings(redis_url=None), role="worker")
    assert caught.value.setting == "SILVERTINE_REDIS_URL"


def test_our_redis_package_does_not_shadow_redis_py() -> None:
    # Run in a fresh interpreter so no earlier import decides the answer.
    code = (
        "import silvertine_streams.redis.clients, redis, redis.asyncio, sys; "
        "assert redis.__name__ == 'redis' and hasattr(redis, 'StrictRedis'), redis; "
        "assert sys.modules['silvertine_streams.redis'] is not redis; "
        "print(redis.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert "silvertine_streams" not in result.stdout
