"""The config file's keys: the table onto the settings fields, and flattening a file."""

from __future__ import annotations

import pytest

from silvertine_streams.configfile.keys import (
    FIELD_KEYS,
    FILE_KEYS,
    BadSection,
    UnknownKey,
    flatten,
)
from silvertine_streams.settings import Settings


def test_every_setting_has_exactly_one_key_in_the_file() -> None:
    assert sorted(FILE_KEYS.values()) == sorted(Settings.model_fields)
    assert len(FIELD_KEYS) == len(FILE_KEYS)  # no field named twice


def test_the_platforms_keys_are_where_its_design_puts_them() -> None:
    platform = {
        "redis.url", "redis.max_retries", "redis.retry_delay", "redis.stream_max_length",
        "event_bus.max_queue_size", "event_bus.enable_metrics", "event_bus.idempotency_window",
        "event_bus.handler_timeout", "event_bus.circuit_breaker.failure_threshold",
        "event_bus.circuit_breaker.reset_time", "processor.batch_size",
        "processor.checkpoint_interval", "processor.consumer_name", "monitoring.metrics_port",
        "monitoring.log_level",
    }
    assert platform <= set(FILE_KEYS)
    assert FILE_KEYS["redis.url"] == "redis_url"
    assert FILE_KEYS["event_bus.circuit_breaker.reset_time"] == "circuit_reset_s"


def test_a_file_is_flattened_onto_the_fields() -> None:
    tree = {
        "redis": {"url": "redis://cache:6379/0", "stream_max_length": None},
        "event_bus": {"circuit_breaker": {"failure_threshold": 3}},
        "lanes": {"priorities": {"market_data": "low", "signal": "critical"}},
        "clock": {"servers": ["a", "b:123"]},
        "processor": None,  # an empty section
    }
    assert flatten(tree) == {
        "redis_url": "redis://cache:6379/0",  # null values are not set
        "circuit_failure_threshold": 3,
        # A mapping becomes its variable's text, so it replaces a lower source's value.
        "lanes": "market_data=low,signal=critical",
        "clock_servers": ["a", "b:123"],
    }
    assert flatten(None) == {}  # an empty file


@pytest.mark.parametrize(("tree", "key", "closest"), [
    ({"redis": {"urll": "x"}}, "redis.urll", "redis.url"),
    ({"rediss": {"url": "x"}}, "rediss", "redis"),
    ({"event_bus": {"circuit_breaker": {"reset": 1}}}, "event_bus.circuit_breaker.reset",
     "event_bus.circuit_breaker.reset_time"),
    ({"url": "x"}, "url", None),  # a key outside its section
    ({"redis": {"url": "x"}, "totally_else": 1}, "totally_else", None),
])
def test_an_unknown_key_is_refused_naming_the_closest(
        tree: dict[str, object], key: str, closest: str | None) -> None:
    with pytest.raises(UnknownKey) as caught:
        flatten(tree)
    assert (caught.value.key, caught.value.closest) == (key, closest)


@pytest.mark.parametrize(("tree", "key"), [
    (["redis"], ""),
    ({"redis": "redis://x"}, "redis"),
    ({"event_bus": {"circuit_breaker": 5}}, "event_bus.circuit_breaker"),
])
def test_a_section_that_is_no_mapping_is_refused(tree: object, key: str) -> None:
    with pytest.raises(BadSection) as caught:
        flatten(tree)
    assert caught.value.key == key
