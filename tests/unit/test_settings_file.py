"""Settings from the config file: precedence env > file > default, errors naming key and file.

The shipped ``config/event_engine.yaml`` is held to the settings: every key, at
its default, so it cannot drift from the code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from silvertine_streams.configfile.keys import FILE_KEYS
from silvertine_streams.errors import (
    ConfigError,
    ConfigFileError,
    UnknownConfigKey,
    UnknownSetting,
)
from silvertine_streams.settings import (
    check_variable_names,
    load_settings,
    settings_env,
)

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "event_engine.yaml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SILVERTINE_* variable (a suite run against external servers sets some)."""
    for name in list(os.environ):
        if name.startswith("SILVERTINE_") or name in ("REDIS_URL", "KAFKA_URL"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text(text)
    return path


def dotted_keys(tree: object, prefix: str = "") -> set[str]:
    """The dotted keys of a loaded file; a per-type map (a mapping value) is one key."""
    if not isinstance(tree, dict) or prefix in FILE_KEYS:
        return {prefix}
    return set().union(*(dotted_keys(v, f"{prefix}.{k}" if prefix else k)
                         for k, v in tree.items()))


def test_the_shipped_file_lists_every_key() -> None:
    listed = dotted_keys(yaml.safe_load(SHIPPED.read_text()))
    assert listed == set(FILE_KEYS)


def test_the_shipped_file_holds_every_default() -> None:
    assert load_settings(SHIPPED).model_dump() == load_settings().model_dump()


def test_the_shipped_file_takes_the_redis_url_from_redis_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(SHIPPED).redis_url is None  # unset: the embedded redis-server
    monkeypatch.setenv("REDIS_URL", "redis://cache:6380/3")
    assert load_settings(SHIPPED).redis_url == "redis://cache:6380/3"


def test_precedence_is_env_then_file_then_default(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "kafka:\n  partitions: 8\n  replication_factor: 2\n"
                           "lanes:\n  priorities: {market_data: low}\n")
    monkeypatch.setenv("SILVERTINE_PARTITIONS", "12")
    settings = load_settings(path)
    assert settings.partitions == 12  # the environment wins over the file
    assert settings.replication_factor == 2  # the file wins over the default
    assert settings.app_id == "silvertine"  # the default
    assert load_settings(path, partitions=3).partitions == 3  # overrides win over all
    assert str(settings.lanes["market_data"].name) == "LOW"
    # A per-type map from the environment replaces the file's, it is not merged into it.
    monkeypatch.setenv("SILVERTINE_LANES", "signal=critical")
    assert set(load_settings(path).lanes) == {"signal"}


def test_the_file_is_named_by_silvertine_config(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "worker:\n  app_id: from-the-file\n")
    monkeypatch.setenv("SILVERTINE_CONFIG", str(path))
    check_variable_names(os.environ)  # SILVERTINE_CONFIG is no unknown setting
    assert load_settings().app_id == "from-the-file"
    other = tmp_path / "other.yaml"
    other.write_text("worker:\n  app_id: from-the-option\n")
    assert load_settings(other).app_id == "from-the-option"  # an explicit path wins


def test_a_misspelt_config_variable_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILVERTINE_CONFG", "config/event_engine.yaml")
    with pytest.raises(UnknownSetting) as caught:
        load_settings()
    assert caught.value.closest == "SILVERTINE_CONFIG"


def test_an_unknown_key_stops_loading(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  urll: redis://x\n")
    with pytest.raises(UnknownConfigKey, match=rf"^{path}: redis\.urll is not a setting; "
                                               r"did you mean redis\.url\?"):
        load_settings(path)


@pytest.mark.parametrize(("text", "key", "accepted"), [
    ("kafka:\n  partitions: abc\n", "kafka.partitions", "int >= 1"),
    ("redis:\n  url: mysql://x\n", "redis.url", "redis://"),
    ("event_bus:\n  circuit_breaker:\n    reset_time: -1\n",
     "event_bus.circuit_breaker.reset_time", "float > 0"),
    ("policies:\n  overflow: {order: conflate}\n", "policies.overflow", "order is never shed"),
    ("processor:\n  batch_size: 0\n", "processor.batch_size", "int >= 1"),
])
def test_a_bad_value_names_the_key_and_the_file(tmp_path: Path, text: str, key: str,
                                                accepted: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        load_settings(path)
    assert str(caught.value).startswith(f"{path}: {key}="), caught.value
    assert accepted in str(caught.value)


def test_a_bad_value_from_the_environment_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "kafka:\n  partitions: 8\n")
    monkeypatch.setenv("SILVERTINE_PARTITIONS", "abc")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert not isinstance(caught.value, ConfigFileError)
    assert caught.value.setting == "SILVERTINE_PARTITIONS"


def test_a_password_in_the_file_is_a_secret_never_shown(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  url: redis://cache:6379/0\n  password: hunter2\n"
                           "kafka:\n  sasl_password: hunter3\n")
    with pytest.raises(ConfigError) as caught:  # SASL password without SASL
        load_settings(path)
    assert "hunter3" not in str(caught.value)
    settings = load_settings(write(tmp_path, "redis:\n  url: redis://cache:6379/0\n"
                                             "  password: hunter2\n"))
    assert isinstance(settings.redis_password, SecretStr)
    assert "hunter2" not in repr(settings)


def test_a_bad_secret_in_the_file_is_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  url: redis://cache:6379/0\n  password: [hunter2]\n")
    with pytest.raises(ConfigFileError) as caught:
        load_settings(path)
    assert "redis.password" in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_child_gets_the_files_settings_as_variables(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  url: redis://cache:6379/0\nkafka:\n  partitions: 8\n")
    env = settings_env(load_settings(path), {"SILVERTINE_CONFIG": str(path), "PATH": "/bin"})
    # The child reads the merged settings from its environment, not the file again.
    assert "SILVERTINE_CONFIG" not in env
    assert env["SILVERTINE_REDIS_URL"] == "redis://cache:6379/0"
    assert env["SILVERTINE_PARTITIONS"] == "8"
    assert env["PATH"] == "/bin"
