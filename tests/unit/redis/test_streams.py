"""The pure parts of ``RedisStreamManager``: entry naming, arguments (no server)."""

from __future__ import annotations

import pytest

from silvertine_streams.events import EventType
from silvertine_streams.redis.streams import IngressEntry, RedisStreamManager, _type_name
from silvertine_streams.settings import Settings


def test_an_ingress_entry_names_its_type_origin_and_time() -> None:
    entry = IngressEntry("events:fill", "1700000000123-4", b"{}")
    assert entry.event_type is EventType.FILL
    assert entry.origin == "events:fill/1700000000123-4"  # the ingress mirror's origin
    assert entry.received_s == 1700000000.123


def test_event_types_are_checked() -> None:
    assert _type_name(EventType.ORDER) == _type_name("order") == "order"
    with pytest.raises(ValueError, match="unknown event type 'orders'"):
        _type_name("orders")


def test_the_url_argument_wins_over_the_settings_and_nothing_connects() -> None:
    base = Settings(redis_url="redis://elsewhere:1/0")
    manager = RedisStreamManager(redis_url="redis://127.0.0.1:6390/2", settings=base)
    assert manager.settings.redis_url == "redis://127.0.0.1:6390/2"
    assert not manager.connected
    with pytest.raises(RuntimeError, match="not connected"):
        _ = manager.redis
    assert RedisStreamManager(settings=base).settings is base


@pytest.mark.parametrize(("retries", "delay"), [(-1, 1.0), (3, -0.5)])
def test_negative_retries_or_delays_are_refused(retries: int, delay: float) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        RedisStreamManager(max_retries=retries, retry_delay=delay,
                           settings=Settings(redis_url="redis://h:1/0"))
