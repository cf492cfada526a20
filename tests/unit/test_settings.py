"""Settings: read from SILVERTINE_* variables; a bad value names the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from silvertine_streams.errors import ConfigError
from silvertine_streams.settings import Settings, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_run_the_embedded_stack() -> None:
    settings = Settings()
    assert settings.kafka_url is None and settings.redis_url is None
    assert settings.partitions == 4
    assert settings.web_host == "127.0.0.1"  # Faust's web server serves tables: loopback only


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILVERTINE_PARTITIONS", "12")
    monkeypatch.setenv("SILVERTINE_KAFKA_URL", "kafka://a:9092;b:9093")
    settings = load_settings()
    assert settings.partitions == 12
    assert settings.kafka_bootstrap == ["a:9092", "b:9093"]


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("SILVERTINE_PARTITIONS", "abc", "int >= 1"),
        ("SILVERTINE_PARTITIONS", "0", "int >= 1"),
        ("SILVERTINE_KAFKA_URL", "http://broker:9092", "kafka://host:port"),
        ("SILVERTINE_REDIS_URL", "mysql://x", "redis://"),
        ("SILVERTINE_TABLE_STORE", "rocksdict://", "memory:// or rocksdb://"),
        ("SILVERTINE_LOG_LEVEL", "loud", "debug"),
        ("SILVERTINE_HANDLER_TIMEOUT_S", "-1", "> 0"),
        ("SILVERTINE_EVENT_TYPES", "order,fills", "comma-separated types of market_data"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_accepts(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, accepted: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.setting == variable
    assert variable in str(caught.value) and repr(value) in str(caught.value)
    assert accepted in str(caught.value)


def test_event_types_narrow_what_a_worker_consumes_in_a_fixed_order() -> None:
    assert load_settings().consumed_types == (
        "market_data", "order", "fill", "signal", "system")
    assert load_settings(event_types=" fill, order ").consumed_types == ("order", "fill")


def test_passwords_are_hidden_when_printed() -> None:
    settings = load_settings(redis_url="redis://trader:hunter2@cache:6379/0")
    assert "hunter2" not in repr(settings)
    assert "trader:***@cache" in repr(settings)


def test_every_setting_is_documented_in_the_readme() -> None:
    documented = set(re.findall(r"`(SILVERTINE_[A-Z_]+)`", README.read_text()))
    settings = {f"SILVERTINE_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set()
