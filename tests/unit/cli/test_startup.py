"""Unit tests for silvertine_streams.cli.startup: which Redis settings break a guarantee."""

from __future__ import annotations

import pytest

from silvertine_streams.cli.startup import redis_risks

SAFE = {"aof_enabled": 1, "maxmemory_policy": "noeviction", "redis_mode": "standalone"}


def test_a_safe_redis_has_no_risks() -> None:
    assert redis_risks(SAFE) == []


@pytest.mark.parametrize(("field", "value", "setting", "shown"), [
    ("aof_enabled", 0, "appendonly", "no"),
    ("maxmemory_policy", "allkeys-lru", "maxmemory-policy", "allkeys-lru"),
    ("maxmemory_policy", "volatile-ttl", "maxmemory-policy", "volatile-ttl"),
    ("redis_mode", "cluster", "cluster-enabled", "cluster"),
])
def test_each_unsafe_setting_is_named_with_what_it_needs(
        field: str, value: object, setting: str, shown: str) -> None:
    [(named, found, needed)] = redis_risks({**SAFE, field: value})
    assert (named, found) == (setting, shown)
    assert needed  # says what to set and why


def test_a_missing_field_counts_as_unsafe() -> None:
    # A Redis that does not report persistence cannot be shown to keep the log.
    assert [r[0] for r in redis_risks({"maxmemory_policy": "noeviction",
                                       "redis_mode": "standalone"})] == ["appendonly"]
