"""Redis ACL and TLS settings reach the client: any password, CA, client certificate, hostname."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection

from silvertine_streams.redis.clients import redis_client, redis_security
from silvertine_streams.settings import load_settings

SECRET = "S3cr/et@PW: x"


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "some.pem"
    path.write_text("the factory passes the path; redis-py loads it on connect\n")
    return path


def test_a_password_with_any_character_in_the_url_reaches_the_client() -> None:
    client = redis_client(load_settings(redis_url="redis://app:a/b@c:d@127.0.0.1:6390/2"),
                          role="worker")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 2)
    assert (kwargs["username"], kwargs["password"]) == ("app", "a/b@c:d")


def test_user_and_password_settings_reach_the_client_verbatim() -> None:
    settings = load_settings(redis_url="redis://127.0.0.1:6390/0", redis_username="worker",
                             redis_password=SECRET)
    kwargs = redis_client(settings, role="worker").connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("worker", SECRET)


def test_rediss_verifies_with_the_ca_and_presents_the_client_certificate(pem: Path) -> None:
    settings = load_settings(redis_url="rediss://cache:6390/0", redis_ssl_cafile=str(pem),
                             redis_ssl_certfile=str(pem), redis_ssl_keyfile=str(pem))
    client = redis_client(settings, role="worker")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is SSLConnection
    assert kwargs["ssl_ca_certs"] == kwargs["ssl_certfile"] == kwargs["ssl_keyfile"] == str(pem)
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is True
    assert kwargs["ssl_password"] == ""  # an encrypted key fails instead of prompting


def test_host_name_checking_can_be_relaxed_but_verification_cannot() -> None:
    settings = load_settings(redis_url="rediss://cache:6390/0", redis_ssl_check_hostname=False)
    security = redis_security(settings)
    assert security == {"ssl": True, "ssl_cert_reqs": "required", "ssl_check_hostname": False}


def test_plain_redis_has_no_tls_keywords() -> None:
    assert redis_security(load_settings(redis_url="redis://cache:6390/0")) == {}
