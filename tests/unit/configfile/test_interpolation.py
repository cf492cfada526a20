"""``${VAR:default}`` interpolation of the config file's values (pure)."""

from __future__ import annotations

import pytest

from silvertine_streams.configfile.interpolation import (
    InterpolationError,
    interpolate,
    interpolate_tree,
)

ENV = {"REDIS_URL": "redis://cache:6379/1", "EMPTY": "", "PORT": "9000"}


@pytest.mark.parametrize(("text", "expected"), [
    ("${REDIS_URL}", "redis://cache:6379/1"),
    ("${REDIS_URL:redis://localhost:6379}", "redis://cache:6379/1"),
    ("${MISSING:redis://localhost:6379}", "redis://localhost:6379"),  # the default may hold ':'
    ("${EMPTY:fallback}", "fallback"),  # empty counts as unset, as the shell's ${VAR:-x}
    ("${EMPTY}", ""),  # set but empty, no default: empty
    ("${MISSING:}", ""),
    ("host:${PORT}/x:${PORT:1}", "host:9000/x:9000"),
    ("plain text, $5 and $HOME", "plain text, $5 and $HOME"),
    ("$${REDIS_URL}", "${REDIS_URL}"),  # the escape: a literal ${
])
def test_references_are_replaced(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("${MISSING}", "MISSING is not set (write ${MISSING:default} for a default)"),
    ("${REDIS_URL", "unclosed ${"),
    ("${1BAD:x}", "'1BAD' is no variable name"),
    ("${}", "'' is no variable name"),
])
def test_bad_references_are_refused(text: str, reason: str) -> None:
    with pytest.raises(InterpolationError) as caught:
        interpolate(text, ENV)
    assert reason in caught.value.reason


def test_a_tree_is_interpolated_and_values_that_come_out_empty_are_not_set() -> None:
    tree = {
        "redis": {"url": "${MISSING:}", "max_retries": 3, "password": "${EMPTY}"},
        "monitoring": {"metrics_port": "${PORT:9464}", "log_level": ""},
        "clock": {"servers": ["${MISSING:pool.ntp.org}", "b"]},
    }
    assert interpolate_tree(tree, ENV) == {
        # Both references came out empty: the keys are left out (not set) ...
        "redis": {"max_retries": 3},
        # ... but a literal empty value stays, for validation to judge.
        "monitoring": {"metrics_port": "9000", "log_level": ""},
        "clock": {"servers": ["pool.ntp.org", "b"]},
    }
    assert tree["redis"]["url"] == "${MISSING:}"  # the input is not changed


def test_a_tree_error_names_the_dotted_key() -> None:
    with pytest.raises(InterpolationError) as caught:
        interpolate_tree({"event_bus": {"circuit_breaker": {"reset_time": "${NOPE}"}}}, ENV)
    assert caught.value.key == "event_bus.circuit_breaker.reset_time"
    assert str(caught.value).startswith("event_bus.circuit_breaker.reset_time: NOPE is not set")


def test_keys_are_not_interpolated() -> None:
    assert interpolate_tree({"${PORT}": "x"}, ENV) == {"${PORT}": "x"}
