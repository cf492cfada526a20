"""Unit tests for silvertine_streams.events.enums: the wire values of the contract's
enumerations (DESIGN §2), and how they read and write them."""

from __future__ import annotations

import enum

import msgspec
import pytest

from silvertine_streams import events
from silvertine_streams.events.enums import (
    EventPriority,
    EventType,
    OrderSide,
    OrderStatus,
    OrderType,
)

WIRE_VALUES: dict[type[enum.StrEnum], list[str]] = {
    EventType: ["market_data", "order", "fill", "signal", "system"],
    OrderSide: ["buy", "sell"],
    OrderType: ["market", "limit", "stop", "stop_limit"],
    OrderStatus: ["pending", "submitted", "partially_filled", "filled", "cancelled", "rejected"],
}


@pytest.mark.parametrize("kind", list(WIRE_VALUES), ids=lambda kind: kind.__name__)
def test_members_are_exactly_the_contract_wire_values(kind: type[enum.StrEnum]) -> None:
    assert [member.value for member in kind] == WIRE_VALUES[kind]


@pytest.mark.parametrize("kind", list(WIRE_VALUES), ids=lambda kind: kind.__name__)
def test_a_wire_value_reads_back_as_its_member_and_writes_as_itself(
    kind: type[enum.StrEnum],
) -> None:
    for value in WIRE_VALUES[kind]:
        member = kind(value)
        assert member.value == value
        assert member == value and str(member) == value  # a str enum: usable as a key
        assert msgspec.json.encode(member) == msgspec.json.encode(value)
        assert msgspec.json.decode(msgspec.json.encode(value), type=kind) is member


@pytest.mark.parametrize(
    ("kind", "bad"),
    [(EventType, "MARKET_DATA"), (EventType, "trade"), (OrderSide, "Buy"),
     (OrderType, "stop-limit"), (OrderStatus, "canceled")],
)
def test_anything_else_is_refused(kind: type[enum.StrEnum], bad: str) -> None:
    with pytest.raises(ValueError):
        kind(bad)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(bad), type=kind)


def test_lower_priority_values_are_more_urgent() -> None:
    assert sorted([EventPriority.LOW, EventPriority.CRITICAL, EventPriority.NORMAL,
                   EventPriority.HIGH]) == [EventPriority.CRITICAL, EventPriority.HIGH,
                                            EventPriority.NORMAL, EventPriority.LOW]
    assert EventPriority.CRITICAL < EventPriority.NORMAL


def test_the_events_package_exports_these_enums_not_copies() -> None:
    assert (events.EventType, events.OrderSide, events.OrderType, events.OrderStatus,
            events.EventPriority) == (EventType, OrderSide, OrderType, OrderStatus,
                                      EventPriority)
