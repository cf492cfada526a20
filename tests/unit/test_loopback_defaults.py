"""Every server a worker opens listens on loopback unless configured otherwise."""

from __future__ import annotations

from pathlib import Path

from silvertine_streams.app import create_app
from silvertine_streams.embedded.servers import server_command
from silvertine_streams.settings import Settings


def test_fausts_web_server_binds_the_configured_host_not_all_interfaces(tmp_path: Path) -> None:
    # Faust listens on web_bind (its default is 0.0.0.0); web_host only names it in URLs.
    settings = Settings(kafka_url="kafka://k:9092", redis_url="redis://r:1/0", data_dir=tmp_path)
    assert create_app(settings).conf.web_bind == "127.0.0.1"
    moved = settings.model_copy(update={"web_host": "10.1.2.3"})
    assert create_app(moved).conf.web_bind == "10.1.2.3"


def test_metrics_default_to_loopback() -> None:
    assert Settings().metrics_host == "127.0.0.1"


def test_the_embedded_servers_listen_on_loopback(tmp_path: Path) -> None:
    kafka, kafka_url, _ = server_command("kafka", "tansu", 9092, tmp_path, tmp_path / "k.log")
    assert kafka[kafka.index("--listener-url") + 1] == "tcp://127.0.0.1:9092"
    redis, _, _ = server_command("redis", "redis-server", 6379, tmp_path, tmp_path / "r.log")
    assert redis[redis.index("--bind") + 1] == "127.0.0.1"
    assert kafka_url == "kafka://127.0.0.1:9092"
