"""Unit tests for silvertine_streams.handlers.registry: subscribing, grouping by
priority, unsubscribing, async detection. Plain functions, no event loop."""

from __future__ import annotations

import enum
import functools
from typing import Any

import pytest

from silvertine_streams.handlers.registry import HandlerPriority, HandlerRegistry

ORDER = "order"
FILL = "fill"


class FakeEventType(enum.StrEnum):
    """Stands in for the events package's EventType (a str enum)."""

    ORDER = "order"
    FILL = "fill"


def noop(event: Any) -> None:
    pass


async def async_noop(event: Any) -> None:
    pass


def test_subscribe_returns_a_uuid4_hex_id() -> None:
    registry = HandlerRegistry()
    handler_id = registry.subscribe(noop, [ORDER])
    assert len(handler_id) == 32
    int(handler_id, 16)
    assert registry.subscribe(noop, [ORDER]) != handler_id


def test_handlers_for_groups_by_priority_critical_first() -> None:
    registry = HandlerRegistry()
    low = registry.subscribe(noop, [ORDER], HandlerPriority.LOW)
    crit_a = registry.subscribe(noop, [ORDER], HandlerPriority.CRITICAL)
    normal = registry.subscribe(noop, [ORDER])
    crit_b = registry.subscribe(noop, [ORDER], HandlerPriority.CRITICAL)
    groups = registry.handlers_for(ORDER)
    assert [[s.handler_id for s in group] for group in groups] == [
        [crit_a, crit_b],
        [normal],
        [low],
    ]
    assert [group[0].priority for group in groups] == [
        HandlerPriority.CRITICAL,
        HandlerPriority.NORMAL,
        HandlerPriority.LOW,
    ]


def test_handlers_for_an_unsubscribed_type_is_empty() -> None:
    registry = HandlerRegistry()
    registry.subscribe(noop, [ORDER])
    assert registry.handlers_for(FILL) == ()
    assert not registry.has_handlers(FILL)
    assert registry.has_handlers(ORDER)


def test_a_bare_string_is_one_event_type() -> None:
    registry = HandlerRegistry()
    handler_id = registry.subscribe(noop, ORDER)
    subscription = registry.get(handler_id)
    assert subscription is not None
    assert subscription.event_types == frozenset({ORDER})
    assert registry.handlers_for("o") == ()


def test_str_enum_members_and_strings_find_the_same_handlers() -> None:
    registry = HandlerRegistry()
    by_member = registry.subscribe(noop, [FakeEventType.ORDER])
    by_string = registry.subscribe(noop, ["order"])
    for key in (ORDER, FakeEventType.ORDER):
        assert [s.handler_id for s in registry.handlers_for(key)[0]] == [by_member, by_string]


def test_one_handler_on_several_types() -> None:
    registry = HandlerRegistry()
    handler_id = registry.subscribe(noop, [ORDER, FILL], HandlerPriority.HIGH)
    assert registry.handlers_for(ORDER)[0][0].handler_id == handler_id
    assert registry.handlers_for(FILL)[0][0].handler_id == handler_id


def test_unsubscribe_removes_from_every_type() -> None:
    registry = HandlerRegistry()
    keep = registry.subscribe(noop, [ORDER])
    gone = registry.subscribe(noop, [ORDER, FILL])
    version = registry.version
    assert registry.unsubscribe(gone)
    assert registry.version > version
    assert [s.handler_id for s in registry.handlers_for(ORDER)[0]] == [keep]
    assert registry.handlers_for(FILL) == ()
    assert registry.get(gone) is None
    assert len(registry) == 1


def test_unsubscribe_unknown_id_is_false() -> None:
    registry = HandlerRegistry()
    handler_id = registry.subscribe(noop, [ORDER])
    assert registry.unsubscribe(handler_id)
    assert not registry.unsubscribe(handler_id)
    assert not registry.unsubscribe("nope")


def test_subscribe_rejects_no_types_and_non_callables() -> None:
    registry = HandlerRegistry()
    with pytest.raises(ValueError):
        registry.subscribe(noop, [])
    with pytest.raises(TypeError):
        registry.subscribe("not callable", [ORDER])  # type: ignore[arg-type]  # the point


class AsyncCallable:
    async def __call__(self, event: Any) -> None:
        pass


class SyncCallable:
    def __call__(self, event: Any) -> None:
        pass


class Holder:
    async def on_event(self, event: Any) -> None:
        pass

    def on_event_sync(self, event: Any) -> None:
        pass


async def two_args(tag: str, event: Any) -> None:
    pass


@pytest.mark.parametrize(
    ("handler", "is_async"),
    [
        (noop, False),
        (async_noop, True),
        (Holder().on_event, True),
        (Holder().on_event_sync, False),
        (functools.partial(two_args, "x"), True),
        (AsyncCallable(), True),
        (SyncCallable(), False),
        (lambda event: None, False),
    ],
)
def test_async_detection_at_subscribe_time(handler: Any, is_async: bool) -> None:
    registry = HandlerRegistry()
    subscription = registry.get(registry.subscribe(handler, [ORDER]))
    assert subscription is not None
    assert subscription.is_async is is_async


def test_default_name_is_the_qualified_name() -> None:
    registry = HandlerRegistry()
    by_function = registry.get(registry.subscribe(async_noop, [ORDER]))
    by_instance = registry.get(registry.subscribe(SyncCallable(), [ORDER]))
    named = registry.get(registry.subscribe(noop, [ORDER], name="risk-check"))
    assert by_function is not None and by_instance is not None and named is not None
    assert by_function.name == "async_noop"
    assert by_instance.name == "SyncCallable"
    assert named.name == "risk-check"
