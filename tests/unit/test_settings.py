"""Settings: read from SILVERTINE_* variables; a bad value names the variable."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from silvertine_streams.errors import ConfigError, UnknownSetting
from silvertine_streams.events import EventPriority
from silvertine_streams.settings import Settings, load_settings, settings_env, supervisor_handshake

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
        ("SILVERTINE_EVENT_TYPES", '["order"]', "comma-separated types of market_data"),
        ("SILVERTINE_LANES", "order:fast", "an entry is type=lane"),
        ("SILVERTINE_LANES", "order=fast", "lane: critical, high, normal, low"),
        ("SILVERTINE_LANES", "quotes=low", "no such event type"),
        ("SILVERTINE_LANES", '{"order": "low"}', "comma-separated type=lane"),
        ("SILVERTINE_SEQUENCE_POLICIES", "market_data=loose", "policy: strict, best_effort"),
        ("SILVERTINE_SEQUENCE_POLICIES", "order=strict,order=best_effort", "'order' twice"),
        ("SILVERTINE_OVERFLOW_POLICIES", "market_data=shed", "conflate, drop_oldest"),
        ("SILVERTINE_OVERFLOW_POLICIES", "fill=drop_oldest", "order and fill only block"),
        ("SILVERTINE_HANDLERS", "my_risk.handlers", "module:function"),
        ("SILVERTINE_HANDLERS", "a:b,my-risk:setup", "not 'my-risk:setup'"),
        ("SILVERTINE_CLOCK_SERVERS", "pool.ntp.org,ntp:0", "port must be 1..65535"),
        ("SILVERTINE_CLOCK_SERVERS", "[::1", "host or host:port"),
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


# A value of each comma-separated setting as users write it, and as it is typed.
COMMA_SETTINGS = [
    ("SILVERTINE_SEQUENCE_POLICIES", " market_data = strict ,signal=best_effort",
     "sequence_policies", {"market_data": "strict", "signal": "best_effort"}),
    ("SILVERTINE_LANES", "market_data=low,signal=critical",
     "lanes", {"market_data": EventPriority.LOW, "signal": EventPriority.CRITICAL}),
    ("SILVERTINE_OVERFLOW_POLICIES", "market_data=drop_oldest,order=block,",
     "overflow_policies", {"market_data": "drop_oldest", "order": "block"}),
    ("SILVERTINE_HANDLERS", "my_risk.handlers:setup, audit:subscribe",
     "handlers", ("my_risk.handlers:setup", "audit:subscribe")),
    ("SILVERTINE_CLOCK_SERVERS", "pool.ntp.org,10.0.0.1:1123,[::1]:123",
     "clock_servers", ("pool.ntp.org", "10.0.0.1:1123", "[::1]:123")),
    ("SILVERTINE_EVENT_TYPES", "fill,order", "event_types", ("fill", "order")),
]


@pytest.mark.parametrize(("variable", "text", "field", "typed"), COMMA_SETTINGS)
def test_comma_separated_settings_are_typed_when_they_load(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, typed: object
) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(load_settings(), field) == typed
    monkeypatch.delenv(variable)
    # A keyword override may give the text or the typed value.
    assert getattr(load_settings(**{field: text}), field) == typed
    assert getattr(load_settings(**{field: typed}), field) == typed
    assert getattr(load_settings(), field) in ({}, ())


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("lanes", {"order": "fast"}, "SILVERTINE_LANES"),
        ("overflow_policies", {"order": "conflate"}, "SILVERTINE_OVERFLOW_POLICIES"),
        ("sequence_policies", {"quotes": "strict"}, "SILVERTINE_SEQUENCE_POLICIES"),
        ("handlers", ("setup",), "SILVERTINE_HANDLERS"),
        ("clock_servers", ["ntp:99999"], "SILVERTINE_CLOCK_SERVERS"),
        ("event_types", ("orders",), "SILVERTINE_EVENT_TYPES"),
    ],
)
def test_a_bad_typed_override_names_the_variable(field: str, value: object, variable: str
                                                 ) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**{field: value})
    assert caught.value.setting == variable


def _load_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Load settings as a child process started with ``env`` would."""
    for name in [n for n in os.environ if n.startswith("SILVERTINE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("SILVERTINE_"):
            monkeypatch.setenv(name, value)
    return load_settings()


@pytest.mark.parametrize(("variable", "text", "field", "typed"), COMMA_SETTINGS)
def test_settings_env_writes_each_setting_back_as_users_write_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, field: str, typed: object
) -> None:
    settings = load_settings(**{field: typed})
    env = settings_env(settings, {"PATH": "/bin", variable: "stale"})
    assert env["PATH"] == "/bin"
    assert env[variable] == re.sub(r"\s", "", text).strip(",")  # the same syntax, tidied
    child = _load_from(env, monkeypatch)
    assert getattr(child, field) == typed
    assert child == settings


def test_every_setting_round_trips_through_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = {field: typed for _, _, field, typed in COMMA_SETTINGS}
    settings = load_settings(
        **changed, kafka_url="kafka://a:9092;b:9093", partitions=7, overlap_writes=True,
        timestamp_floor="2010-05-06T07:08:09+02:00", data_dir="/tmp/x")
    assert _load_from(settings_env(settings, {}), monkeypatch) == settings
    assert _load_from(settings_env(Settings(), {}), monkeypatch) == Settings()


def test_settings_env_accepts_text_put_in_by_model_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # model_copy(update=...) does not validate: tests and the bench pass the text form.
    copied = load_settings().model_copy(update={"event_types": "order, fill",
                                                "lanes": "market_data=low"})
    env = settings_env(copied, {})
    assert (env["SILVERTINE_EVENT_TYPES"], env["SILVERTINE_LANES"]) == (
        "order,fill", "market_data=low")
    assert _load_from(env, monkeypatch).event_types == ("order", "fill")
    with pytest.raises(ConfigError) as caught:
        settings_env(load_settings().model_copy(update={"lanes": "order=fast"}), {})
    assert caught.value.setting == "SILVERTINE_LANES"


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


@pytest.mark.parametrize(("variable", "closest"), [
    ("SILVERTINE_REDIS_ULR", "SILVERTINE_REDIS_URL"),
    ("SILVERTINE_PARTITONS", "SILVERTINE_PARTITIONS"),
    ("silvertine_kafka_rul", "SILVERTINE_KAFKA_URL"),
    ("SILVERTINE_COMPLETELY_DIFFERENT", None),
])
def test_an_unknown_variable_stops_loading_and_names_the_closest_setting(
        monkeypatch: pytest.MonkeyPatch, variable: str, closest: str | None) -> None:
    monkeypatch.setenv(variable, "redis://trader:hunter2@cache:6379/0")
    with pytest.raises(UnknownSetting) as caught:
        load_settings()
    message = str(caught.value)
    assert variable in message and caught.value.closest == closest
    assert (f"did you mean {closest}?" in message) == (closest is not None)
    assert "hunter2" not in message  # the value of a misspelt URL is never shown


def test_faust_and_supervisor_variables_are_not_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILVERTINE_FAUST_BROKER_URL", "kafka://elsewhere:9092")
    monkeypatch.setenv("SILVERTINE_READY_FILE", "/tmp/ready")
    monkeypatch.setenv("SILVERTINE_RESTARTS", "2")
    assert load_settings().partitions == 4
    assert supervisor_handshake() == (Path("/tmp/ready"), 2)


def test_a_bad_url_never_echoes_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILVERTINE_REDIS_URL", "mysql://trader:S3cretPW@db:1/0")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "S3cretPW" not in str(caught.value) and "trader:***@db" in str(caught.value)
