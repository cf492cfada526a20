"""ConfigFileSource: pydantic-settings' YAML source with interpolation, unknown keys, mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from silvertine_streams.configfile.source import ConfigFileSource
from silvertine_streams.errors import ConfigFileError, UnknownConfigKey
from silvertine_streams.settings import Settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text(text)
    return path


def test_the_file_is_read_interpolated_and_flattened(tmp_path: Path) -> None:
    path = write(tmp_path, "redis:\n  url: ${REDIS_URL:redis://localhost:6379}\n"
                           "monitoring:\n  metrics_port: 0\n")
    source = ConfigFileSource(Settings, path, {"REDIS_URL": "redis://cache:6379/2"})
    assert source.values == {"redis_url": "redis://cache:6379/2", "metrics_port": 0}
    assert source() == source.values  # what pydantic-settings merges
    assert source.path == path


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    # yaml.load would build the object (and run code); safe_load refuses the tag.
    path = write(tmp_path, "redis:\n  url: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigFileError, match=r"engine\.yaml: is not YAML \(line 2"):
        ConfigFileSource(Settings, path, {})


@pytest.mark.parametrize(("text", "message"), [
    ("redis:\n  urll: redis://x\n",
     "redis.urll is not a setting; did you mean redis.url?"),
    ("monitoring:\n  metrics_prot: 1\n",
     "monitoring.metrics_prot is not a setting; did you mean monitoring.metrics_port?"),
])
def test_an_unknown_key_names_the_key_and_the_file(tmp_path: Path, text: str,
                                                   message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UnknownConfigKey) as caught:
        ConfigFileSource(Settings, path, {})
    assert str(caught.value).startswith(f"{path}: {message}")
    assert caught.value.path == str(path)


@pytest.mark.parametrize(("text", "message"), [
    ("redis:\n  url: ${REDIS_URL}\n", "redis.url: REDIS_URL is not set"),
    ("- a\n- b\n", "holds a list, not sections of keys"),
    ("redis: hunter2\n", "redis='str' is not valid; accepted: a section of key: value lines"),
    ("redis:\n  url: [unclosed\n", "is not YAML (line 3, column 1"),
])
def test_a_broken_file_names_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as caught:
        ConfigFileSource(Settings, path, {})
    assert str(caught.value).startswith(f"{path}: "), caught.value
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_missing_file_is_an_error_not_an_empty_file(tmp_path: Path) -> None:
    # pydantic-settings' own source would skip it silently.
    with pytest.raises(ConfigFileError, match=r"nope\.yaml: no such file$"):
        ConfigFileSource(Settings, tmp_path / "nope.yaml", {})
