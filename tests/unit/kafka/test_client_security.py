"""Kafka SASL/TLS settings reach every client the package builds, and the worker's own."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from silvertine_streams.errors import ConfigError
from silvertine_streams.kafka.clients import (
    kafka_admin,
    kafka_consumer,
    kafka_credentials,
    kafka_producer,
    kafka_security,
)
from silvertine_streams.settings import Settings, load_settings

SECRET = "k4fka/P@ss:w"


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a client certificate and key it issued, as PEM files."""
    folder = tmp_path_factory.mktemp("pems")
    ca = trustme.CA()
    client = ca.issue_cert("silvertine-worker")
    paths = {"ca": folder / "ca.pem", "cert": folder / "client.pem", "key": folder / "client.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    client.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    client.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def sasl_ssl(pems: dict[str, Path], **changes: object) -> Settings:
    return load_settings(**{
        "kafka_url": "kafka://k1:9093", "redis_url": "redis://r:1/0",
        "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "engine", "kafka_sasl_password": SECRET,
        "kafka_ssl_cafile": str(pems["ca"]), "kafka_ssl_certfile": str(pems["cert"]),
        "kafka_ssl_keyfile": str(pems["key"]), **changes})


def test_sasl_ssl_becomes_fausts_sasl_credentials_with_a_verifying_tls_context(
        pems: dict[str, Path]) -> None:
    credentials = kafka_credentials(sasl_ssl(pems))
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("engine", SECRET)
    assert SECRET not in repr(credentials)
    context = credentials.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    # Our CA was loaded (not only the system's).
    assert any("Testing CA" in str(cert.get("subject")) for cert in context.get_ca_certs())


def test_host_name_checking_can_be_relaxed_but_verification_cannot(pems: dict[str, Path]
                                                                   ) -> None:
    credentials = kafka_credentials(sasl_ssl(pems, kafka_ssl_check_hostname=False))
    assert isinstance(credentials, SASLCredentials) and credentials.ssl_context is not None
    assert credentials.ssl_context.check_hostname is False
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_ssl_alone_is_tls_without_a_login(pems: dict[str, Path]) -> None:
    settings = load_settings(kafka_url="kafka://k1:9093", kafka_security_protocol="SSL",
                             kafka_ssl_cafile=str(pems["ca"]))
    credentials = kafka_credentials(settings)
    assert isinstance(credentials, SSLCredentials)
    assert kafka_security(settings)["security_protocol"] == "SSL"


def test_sasl_plaintext_has_no_tls_context() -> None:
    settings = load_settings(kafka_url="kafka://k1:9092", kafka_security_protocol="SASL_PLAINTEXT",
                             kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u",
                             kafka_sasl_password=SECRET)
    security = kafka_security(settings)
    assert security["security_protocol"] == "SASL_PLAINTEXT"
    assert security["ssl_context"] is None
    assert (security["sasl_mechanism"], security["sasl_plain_username"],
            security["sasl_plain_password"]) == ("PLAIN", "u", SECRET)


async def test_every_client_kind_logs_in_as_the_settings_say(pems: dict[str, Path]) -> None:
    settings = sasl_ssl(pems)
    producer = kafka_producer(settings, role="publisher")
    consumer = kafka_consumer(settings, role="replay")
    admin = kafka_admin(settings, role="topics")
    try:
        for client in (producer.client, consumer._client, admin._client):
            assert client._security_protocol == "SASL_SSL"
            assert client._sasl_mechanism == "SCRAM-SHA-512"
            assert client._sasl_plain_username == "engine"
            assert client._sasl_plain_password == SECRET
            assert client._ssl_context is not None
            assert client._ssl_context.verify_mode == ssl.CERT_REQUIRED
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.close()


def test_our_clients_and_the_worker_say_the_same(pems: dict[str, Path], tmp_path: Path) -> None:
    from silvertine_streams.app import create_app

    settings = sasl_ssl(pems, data_dir=tmp_path)
    ours = kafka_security(settings)
    app = create_app(settings)
    worker = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials))
    contexts = (ours.pop("ssl_context"), worker.pop("ssl_context"))
    assert ours == worker
    assert all(isinstance(c, ssl.SSLContext) for c in contexts)


def test_a_pem_that_does_not_load_is_a_config_error_naming_the_files(
        pems: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as caught:
        kafka_credentials(sasl_ssl(pems, kafka_ssl_certfile=str(broken)))
    assert "SILVERTINE_KAFKA_SSL_CERTFILE" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_an_encrypted_key_without_its_password_fails_instead_of_prompting(
        pems: dict[str, Path], tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pems["key"].read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"keypass")))
    with pytest.raises(ConfigError):
        kafka_credentials(sasl_ssl(pems, kafka_ssl_keyfile=str(encrypted)))
    unlocked = kafka_credentials(sasl_ssl(pems, kafka_ssl_keyfile=str(encrypted),
                                          kafka_ssl_key_password="keypass"))
    assert isinstance(unlocked, SASLCredentials)
