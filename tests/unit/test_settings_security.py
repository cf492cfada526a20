"""Security settings: SASL/TLS for Kafka, ACL/TLS for Redis, secrets from files, never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from silvertine_streams.errors import ConfigError
from silvertine_streams.settings import Settings, load_settings, settings_env

SECRET = "S3cr/et@PW: x"
"""A password with characters URLs and shells trip on; it must never be printed."""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SILVERTINE_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A file that exists (the settings check files exist; the factories load them)."""
    path = tmp_path / "ca.pem"
    path.write_text("not checked by the settings\n")
    return path


def load_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_sasl_ssl_settings_load_and_the_password_stays_hidden(
        monkeypatch: pytest.MonkeyPatch, pem: Path) -> None:
    settings = load_from({
        "SILVERTINE_KAFKA_URL": "kafka://k:9093",
        "SILVERTINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "SILVERTINE_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "SILVERTINE_KAFKA_SASL_USERNAME": "engine",
        "SILVERTINE_KAFKA_SASL_PASSWORD": SECRET,
        "SILVERTINE_KAFKA_SSL_CAFILE": str(pem),
    }, monkeypatch)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    assert settings.kafka_ssl_check_hostname is True  # on unless turned off
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_defaults_are_plaintext_without_credentials() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.redis_password is None and settings.kafka_sasl_password is None
    assert settings.redis_ssl_check_hostname and settings.kafka_ssl_check_hostname


KAFKA = {"kafka_url": "kafka://k:9093"}
SASL = {**KAFKA, "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": "u", "kafka_sasl_password": SECRET}


@pytest.mark.parametrize(("changes", "variable", "says"), [
    ({**SASL, "kafka_sasl_mechanism": None}, "SILVERTINE_KAFKA_SASL_MECHANISM", "SASL_SSL"),
    ({**SASL, "kafka_sasl_username": None}, "SILVERTINE_KAFKA_SASL_USERNAME", "SASL_SSL"),
    ({**SASL, "kafka_sasl_password": None}, "SILVERTINE_KAFKA_SASL_PASSWORD", "SASL_SSL"),
    ({**SASL, "kafka_sasl_mechanism": "GSSAPI"}, "SILVERTINE_KAFKA_SASL_MECHANISM", "SCRAM"),
    ({**SASL, "kafka_security_protocol": "SSL"}, "SILVERTINE_KAFKA_SECURITY_PROTOCOL",
     "SILVERTINE_KAFKA_SASL_"),
    ({**SASL, "kafka_url": None}, "SILVERTINE_KAFKA_URL", "embedded broker is plaintext"),
    ({**KAFKA, "kafka_ssl_cafile": "PEM"}, "SILVERTINE_KAFKA_SECURITY_PROTOCOL",
     "SILVERTINE_KAFKA_SSL_CAFILE"),
    ({**KAFKA, "kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "PEM"},
     "SILVERTINE_KAFKA_SSL_CERTFILE", "needs its certificate"),
    ({**KAFKA, "kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent.pem"},
     "SILVERTINE_KAFKA_SSL_CAFILE", "/nonexistent.pem is not a file"),
    ({"redis_url": "redis://r:1/0", "redis_ssl_cafile": "PEM"}, "SILVERTINE_REDIS_URL",
     "rediss://"),
    ({"redis_url": "rediss://r:1/0", "redis_ssl_keyfile": "PEM"},
     "SILVERTINE_REDIS_SSL_CERTFILE", "needs its certificate"),
    ({"redis_password": SECRET}, "SILVERTINE_REDIS_URL", "embedded redis-server has no users"),
    ({"redis_url": f"redis://u:{SECRET.replace(' ', '')}@r:1/0", "redis_password": SECRET},
     "SILVERTINE_REDIS_PASSWORD", "one place"),
    ({"redis_url": "redis://u:pw@r:1/0", "redis_username": "v"},
     "SILVERTINE_REDIS_USERNAME", "one place"),
])
def test_contradicting_or_ignored_security_settings_are_refused_by_name(
        pem: Path, changes: dict[str, object], variable: str, says: str) -> None:
    changes = {k: (str(pem) if v == "PEM" else v) for k, v in changes.items()}
    with pytest.raises(ConfigError) as caught:
        load_settings(**changes)
    assert caught.value.setting == variable
    assert says in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET.replace(" ", "") not in str(caught.value)


@pytest.mark.parametrize("url", [
    f"redis://trader:{SECRET.replace(' ', '')}@cache:99999/0",   # a bad port
    f"redis://trader:{SECRET}@cache:6379/0",                    # a space: not a URL
    f"redis://trader:{SECRET.replace(' ', '')}@cache:6379/0?ssl=true",
])
def test_a_bad_redis_url_is_refused_with_its_password_masked(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url=url)
    message = str(caught.value)
    assert caught.value.setting == "SILVERTINE_REDIS_URL"
    assert "S3cr" not in message and "trader:***@" in message


def test_a_password_with_any_character_works_in_the_url_and_in_its_own_setting() -> None:
    in_url = load_settings(redis_url="redis://app:a/b@c:d@127.0.0.1:1/0")
    assert in_url.redis_display == "redis://app:***@127.0.0.1:1/0"
    own = load_settings(redis_url="rediss://127.0.0.1:1/0", redis_username="app",
                        redis_password=SECRET)
    assert own.redis_password is not None and own.redis_password.get_secret_value() == SECRET


def test_secrets_come_from_files_for_container_secrets(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    redis_secret = tmp_path / "redis_password"
    redis_secret.write_text(f"{SECRET}\n")
    kafka_secret = tmp_path / "kafka_password"
    kafka_secret.write_text("k4fka\n")
    settings = load_from({
        "SILVERTINE_REDIS_URL": "redis://127.0.0.1:1/0",
        "SILVERTINE_REDIS_USERNAME": "worker",
        "SILVERTINE_REDIS_PASSWORD_FILE": str(redis_secret),
        **{f"SILVERTINE_{k.upper()}": str(v) for k, v in SASL.items()
           if k != "kafka_sasl_password"},
        "SILVERTINE_KAFKA_SASL_PASSWORD_FILE": str(kafka_secret),
    }, monkeypatch)
    assert settings.redis_password is not None and settings.kafka_sasl_password is not None
    assert settings.redis_password.get_secret_value() == SECRET
    assert settings.kafka_sasl_password.get_secret_value() == "k4fka"


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url="redis://r:1/0", redis_password=SECRET,
                      redis_password_file=str(secret))
    assert caught.value.setting == "SILVERTINE_REDIS_PASSWORD_FILE"
    assert "not both" in str(caught.value) and SECRET not in str(caught.value)


def test_a_missing_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url="redis://r:1/0", redis_password_file=str(tmp_path / "nope"))
    assert caught.value.setting == "SILVERTINE_REDIS_PASSWORD_FILE"
    assert "nope" in str(caught.value)


def test_a_child_gets_a_secret_from_its_file_not_in_its_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(SECRET)
    settings = load_settings(redis_url="redis://r:1/0", redis_password_file=str(secret))
    env = settings_env(settings, {})
    assert env["SILVERTINE_REDIS_PASSWORD_FILE"] == str(secret)
    assert "SILVERTINE_REDIS_PASSWORD" not in env
    assert SECRET not in "".join(env.values())
    assert load_from(env, monkeypatch) == settings


def test_a_secret_from_the_environment_reaches_the_child_as_it_came(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(**SASL)
    env = settings_env(settings, {})
    assert env["SILVERTINE_KAFKA_SASL_PASSWORD"] == SECRET  # not SecretStr's '**********'
    assert load_from(env, monkeypatch) == settings
