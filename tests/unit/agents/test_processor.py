"""``EventProcessor`` arguments (no server: nothing connects before ``start``)."""

from __future__ import annotations

import pytest

from silvertine_streams.agents.processor import EventProcessor
from silvertine_streams.events import EventType
from silvertine_streams.handlers import EventBus
from silvertine_streams.redis.streams import RedisStreamManager
from silvertine_streams.settings import Settings


def manager() -> RedisStreamManager:
    return RedisStreamManager(settings=Settings(redis_url="redis://h:1/0", dedupe_window_s=60))


def test_types_are_kept_in_the_engines_order_and_names_are_stable() -> None:
    processor = EventProcessor(manager(), EventBus(), event_types=["fill", EventType.ORDER])
    assert processor.event_types == ("order", "fill")
    assert processor.consumer_name.startswith("processor-")
    assert processor.consumer_name == EventProcessor(manager(), EventBus()).consumer_name
    assert not processor.running
    with pytest.raises(ValueError):
        EventProcessor(manager(), EventBus(), event_types=["orders"])


@pytest.mark.parametrize("arguments", [{"batch_size": 0}, {"checkpoint_interval": 0},
                                       {"block_ms": 0}])
def test_bad_sizes_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        EventProcessor(manager(), EventBus(), **arguments)  # type: ignore[arg-type]
