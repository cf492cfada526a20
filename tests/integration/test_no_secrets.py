"""No password in any output: CLI lines, tracebacks, logs at debug level, metrics, command lines.

Every command runs with a recognisable password (``S3cretPW``) and everything it
prints or logs is searched for it, also percent-encoded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from redis.asyncio import Redis

from silvertine_streams import MarketDataEvent, Publisher
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.settings import Settings, settings_env
from silvertine_streams.topics import log_stream
from tests.helpers import async_wait_for
from tests.tls_support import WORKER_PASSWORD, Pki, TlsKafka, TlsRedis, secure_settings
from tests.workers import free_port

pytestmark = pytest.mark.integration

MARK = "S3cretPW"
"""In every password of these tests."""


def assert_no_secret(text: str, where: str) -> None:
    for secret in (MARK, quote(MARK), WORKER_PASSWORD, quote(WORKER_PASSWORD, safe="")):
        assert secret not in text, f"{secret!r} in {where}:\n{text[-3000:]}"


def silvertine(*args: str, env: dict[str, str], timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SILVERTINE_")}
    return subprocess.run([sys.executable, "-m", "silvertine_streams", *args],
                          env={**clean, **env}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_an_absent_redis_with_a_password_is_one_line_naming_it(tmp_path: Path) -> None:
    # The acceptance case, verbatim: nothing listens on port 1.
    done = silvertine("worker", env={"SILVERTINE_REDIS_URL": f"redis://user:{MARK}@127.0.0.1:1/0",
                                     "SILVERTINE_DATA_DIR": str(tmp_path / "data")})
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0], lines
    assert_no_secret(done.stdout + done.stderr, "the worker's output")


@pytest.mark.parametrize(("args", "url", "status", "more"), [
    (("--debug", "worker"), f"redis://user:{MARK}@127.0.0.1:1/0", 1, {}),   # a traceback too
    (("worker",), f"redis://user:{MARK}@127.0.0.1:99999/0", 2, {}),         # a bad port
    (("--debug", "worker"), f"redis://user:{MARK}@127.0.0.1:99999/0", 1, {}),
    (("worker",), f"redis://user:{MARK} with spaces@127.0.0.1:1/0", 2, {}),  # not a URL
    (("worker",), f"redis://user:{quote(MARK + '/@:', safe='')}@127.0.0.1:1/0", 3, {}),
    # Two passwords: refused, and in a traceback neither shows (pydantic hides inputs).
    (("--debug", "worker"), f"redis://user:{MARK}@127.0.0.1:1/0", 1,
     {"SILVERTINE_REDIS_PASSWORD": f"{MARK}-2"}),
    (("--debug", "worker"), "redis://127.0.0.1:1/0", 1,
     {"SILVERTINE_KAFKA_SASL_PASSWORD": f"{MARK}-3", "SILVERTINE_KAFKA_URL": "kafka://k:1"}),
    (("replay", "--type", "order"), f"rediss://user:{MARK}/@:x@127.0.0.1:1/0", 3, {}),
    (("audit", "0" * 32, "--no-kafka"), f"redis://user:{MARK}@127.0.0.1:1/0", 3, {}),
    (("dlq", "list"), f"redis://:{MARK}@127.0.0.1:1/0", 3, {}),
])
def test_cli_errors_never_show_the_password(
        tmp_path: Path, args: tuple[str, ...], url: str, status: int, more: dict[str, str]
) -> None:
    done = silvertine(*args, env={"SILVERTINE_REDIS_URL": url,
                                  "SILVERTINE_DATA_DIR": str(tmp_path / "data"), **more})
    assert done.returncode == status, done.stdout + done.stderr
    if status == 3:
        assert "127.0.0.1:1" in done.stderr  # the server is named, its password masked
    assert_no_secret(done.stdout + done.stderr, f"silvertine {' '.join(args)}")


def test_stack_commands_mask_your_redis_url(tmp_path: Path) -> None:
    env = {"SILVERTINE_REDIS_URL": f"redis://trader:{MARK}/@:x@127.0.0.1:1/0",
           "SILVERTINE_DATA_DIR": str(tmp_path / "data"), "SILVERTINE_KAFKA_PORT": "0"}
    try:
        up = silvertine("stack", "up", env=env)
        assert up.returncode == 0, up.stderr
        assert "SILVERTINE_REDIS_URL=redis://trader:***@127.0.0.1:1/0" in up.stdout
        status = silvertine("stack", "status", env=env)
        outputs = [up, status]
    finally:
        down = silvertine("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    for done in (*outputs, down):
        assert_no_secret(done.stdout + done.stderr, f"silvertine stack ({' '.join(done.args)})")
    for log in (tmp_path / "data").rglob("*.log"):
        assert_no_secret(log.read_text(errors="replace"), str(log))


async def test_a_worker_at_debug_level_never_logs_its_passwords(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis, tls_kafka: TlsKafka,
        tls_admin: Redis) -> None:
    from_file = secure_settings(tmp_path, pki, tls_redis, tls_kafka, log_level="debug")
    await ensure_topics(from_file)
    # This time the password comes from the environment, as SILVERTINE_REDIS_PASSWORD.
    env = settings_env(from_file, os.environ)
    del env["SILVERTINE_REDIS_PASSWORD_FILE"]
    env["SILVERTINE_REDIS_PASSWORD"] = WORKER_PASSWORD
    metrics_port = free_port()
    env.update(SILVERTINE_METRICS_PORT=str(metrics_port), SILVERTINE_WEB_PORT=str(free_port()))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "silvertine_streams", "worker"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        events = [MarketDataEvent(symbol="AAPL", price=100.0 + i) for i in range(20)]
        async with Publisher(from_file) as publisher:
            await publisher.publish_many(events)  # Kafka, over TLS
            await publisher.publish_to_ingress(MarketDataEvent(symbol="MSFT", price=1.0))
        # And a dead letter through the ingress mirror, with its origin.
        await tls_admin.xadd("events:market_data", {"event": b"not json"})

        async def logged() -> bool:
            return (await tls_admin.xlen(log_stream("market_data")) == 21
                    and await tls_admin.xlen("dlq") == 1)

        await async_wait_for(logged, timeout=120, interval=0.2,
                             message=f"the worker to log\n{log_path.read_text()[-3000:]}")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=5) as response:
            assert_no_secret(response.read().decode(), "the metrics")
        # The command lines of the supervisor and its Faust child.
        for pid in (worker.pid, *children(worker.pid)):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert_no_secret(cmdline, f"the command line of {pid}")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    text = log_path.read_text(errors="replace")
    assert "[DEBUG]" in text  # it did log at debug level
    assert_no_secret(text, "the worker's debug log")
    dead_letters = await tls_admin.xrange("dlq")
    assert_no_secret(repr(dead_letters), "the dead letters")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def test_settings_env_of_a_file_secret_keeps_the_value_out_of_the_environment(
        tmp_path: Path, pki: Pki, tls_redis: TlsRedis) -> None:
    settings: Settings = secure_settings(tmp_path, pki, tls_redis, None)
    assert_no_secret("\n".join(settings_env(settings, {}).values()), "the child's environment")
