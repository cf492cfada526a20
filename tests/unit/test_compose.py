"""docker-compose.yml, checked offline (no Docker engine here): SASL_SSL, ACL + TLS, secret files.

What this cannot check: that the images start with this configuration (the
Kafka PEM keystore, the JAAS file, redis-server's --aclfile). Those need Docker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from silvertine_streams.kafka.clients import kafka_credentials
from silvertine_streams.redis.clients import redis_security
from silvertine_streams.settings import check_variable_names, load_settings

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def make_secrets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_secrets", REPO / "deploy/make_secrets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets")
    make_secrets().write_secrets(folder)
    return folder


def test_every_secret_a_service_mounts_is_declared_and_made(secrets_dir: Path) -> None:
    spec = compose()
    declared = spec["secrets"]
    for name, service in spec["services"].items():
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name} mounts undeclared secret {secret}"
    for name, source in declared.items():
        assert source["file"] == f"./deploy/secrets/{name}"
        assert (secrets_dir / name).is_file(), f"make_secrets.py does not write {name}"


def test_no_password_is_in_the_compose_file() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)password\s*[:=]\s*['\"]?\w", text.replace("_FILE", ""))
    for service in compose()["services"].values():
        for variable in service.get("environment", {}):
            if "PASSWORD" in variable:
                assert variable.endswith("_FILE"), variable


def test_kafka_takes_clients_only_on_sasl_ssl() -> None:
    kafka = compose()["services"]["kafka"]["environment"]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == "SASL_SSL://kafka:9093"
    protocols = dict(entry.split(":") for entry in
                     kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = [entry.split("://")[0] for entry in kafka["KAFKA_LISTENERS"].split(",")]
    for listener in listeners:
        if listener != kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]:
            assert protocols[listener] == "SASL_SSL"
    assert "CONTROLLER://localhost:" in kafka["KAFKA_LISTENERS"]  # not reachable from outside


def test_redis_runs_tls_only_with_an_acl_file() -> None:
    command = compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--port"] == "0" and options["--tls-port"] == "6380"
    assert options["--aclfile"] == "/run/secrets/redis_users.acl"
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "always"


def test_the_acl_file_has_the_readmes_rules(secrets_dir: Path) -> None:
    readme = {m[1]: m[2].split() for m in
              re.finditer(r"^user (\S+) (.*)$", (REPO / "README.md").read_text(), re.M)}
    written = {m[1]: m[2].split() for m in
               re.finditer(r"^user (\S+) (.*)$", (secrets_dir / "redis_users.acl").read_text(),
                           re.M)}
    def without_password(rules: list[str]) -> list[str]:
        return [r for r in rules if not r.startswith((">", "#"))]

    for user in ("default", "silvertine-worker", "silvertine-reader"):
        assert without_password(written[user]) == without_password(readme[user]), user
        assert not any(rule.startswith(">") for rule in written[user])  # hashes only


def test_the_workers_settings_load_and_build_their_tls_clients(
        secrets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = compose()["services"]["worker"]["environment"]
    check_variable_names(environment)  # no unknown SILVERTINE_* variable
    for name in [n for n in os.environ if n.startswith("SILVERTINE_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value).replace("/run/secrets", str(secrets_dir)))
    settings = load_settings()
    assert settings.kafka_security_protocol == "SASL_SSL"
    password = settings.kafka_sasl_password
    assert password is not None
    jaas = (secrets_dir / "kafka_server_jaas.conf").read_text()
    assert f'user_{settings.kafka_sasl_username}="{password.get_secret_value()}"' in jaas
    credentials = kafka_credentials(settings)  # loads the CA the compose secrets hold
    assert credentials is not None
    security = redis_security(settings)
    assert security["ssl"] is True and security["username"] == "silvertine-worker"
    acl = (secrets_dir / "redis_users.acl").read_text()
    assert hashlib.sha256(security["password"].encode()).hexdigest() in acl
