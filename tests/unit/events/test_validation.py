"""Unit tests for silvertine_streams.events.validation: the helpers behind the event
types' rules for text, symbols, integers, numbers and JSON objects.

The helpers are called here directly, on a small ``msgspec.Struct`` stand-in where
they store a settled value; the rules as each event type applies them are in
test_model.py.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pytest

from silvertine_streams.events.enums import OrderSide
from silvertine_streams.events.validation import (
    INT64_MAX,
    SYMBOL_MAX,
    check_json_object,
    check_symbol,
    check_text,
    json_problem,
    non_negative,
    positive,
    settle_enum,
    settle_int,
    settle_number,
    settle_timestamp,
    unit_interval,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from silvertine_streams.events.model import Event


class Holder(msgspec.Struct):
    """Stands in for an event: one field the helpers settle in place."""

    value: Any


def settle(value: object, in_range: Callable[[float], bool] = positive) -> object:
    holder = Holder(value)
    settle_number(cast("Event", holder), "value", "value out of range", in_range)
    return holder.value


# --- text and symbols -----------------------------------------------------------


@pytest.mark.parametrize("text", ["a", "ord-1", "ES H6 fut", "x" * 10])
def test_check_text_accepts_printable_text_up_to_the_limit(text: str) -> None:
    check_text(text, "Order ID", 10)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "Order ID must be a string, got NoneType"),
        (12, "Order ID must be a string, got int"),
        ("", "Order ID cannot be empty"),
        ("x" * 11, "Order ID is too long: 11 characters, at most 10"),
        ("ord\n1", "Order ID contains control or non-printable characters: 'ord\\n1'"),
        ("ord\x001", "Order ID contains control or non-printable characters"),
    ],
)
def test_check_text_names_the_field_and_what_is_wrong(value: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        check_text(value, "Order ID", 10)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "ES H6", "x" * SYMBOL_MAX])
def test_check_symbol_accepts_symbols(symbol: str) -> None:
    check_symbol(symbol)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "Symbol cannot be empty"),
        ("   ", "Symbol cannot be empty"),
        ("AAPL ", "Symbol must not start or end with whitespace: 'AAPL '"),
        (" AAPL", "Symbol must not start or end with whitespace: ' AAPL'"),
        ("x" * (SYMBOL_MAX + 1), f"Symbol is too long: {SYMBOL_MAX + 1} characters"),
        ("AA\tPL", "Symbol contains control or non-printable characters"),
        (7, "Symbol must be a string, got int"),
    ],
)
def test_check_symbol_refuses_what_would_split_or_break_a_kafka_key(
    value: object, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        check_symbol(value)
    assert str(raised.value).startswith(message)


def test_check_symbol_names_the_field_it_checks() -> None:
    with pytest.raises(ValueError, match="^Underlying cannot be empty$"):
        check_symbol("", "Underlying")


# --- integers -------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, INT64_MAX])
def test_settle_int_accepts_int64_from_the_minimum(value: int) -> None:
    settle_int(value, "sequence", 0)


@pytest.mark.parametrize(
    ("value", "minimum", "message"),
    [
        (True, 0, "sequence must be an integer, got bool"),
        (1.0, 0, "sequence must be an integer, got float"),
        ("1", 0, "sequence must be an integer, got str"),
        (-1, 0, "sequence must be between 0 and 2**63-1, got -1"),
        (0, 1, "sequence must be between 1 and 2**63-1, got 0"),
        (INT64_MAX + 1, 0, f"sequence must be between 0 and 2**63-1, got {INT64_MAX + 1}"),
    ],
)
def test_settle_int_refuses_non_integers_and_values_outside_int64(
    value: object, minimum: int, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        settle_int(value, "sequence", minimum)
    assert str(raised.value) == message


# --- numbers --------------------------------------------------------------------


def test_the_ranges() -> None:
    assert positive(1e-12) and not positive(0.0) and not positive(-1.0)
    assert non_negative(0.0) and non_negative(3.0) and not non_negative(-1e-12)
    assert unit_interval(-1.0) and unit_interval(1.0) and unit_interval(0.0)
    assert not unit_interval(1.0000001) and not unit_interval(-1.0000001)


def test_settle_number_stores_an_int_as_the_float_a_decoder_would_produce() -> None:
    settled = settle(5)
    assert settled == 5.0 and type(settled) is float
    assert settle(0, non_negative) == 0.0
    assert settle(2.5) == 2.5


@pytest.mark.parametrize(
    ("value", "in_range", "message"),
    [
        (True, positive, "value must be a number, got bool"),
        ("1.5", positive, "value must be a number, got str"),
        (None, positive, "value must be a number, got NoneType"),
        (math.nan, positive, "value must be a finite number"),
        (math.inf, positive, "value must be a finite number"),
        (-math.inf, non_negative, "value must be a finite number"),
        (10**400, positive, "value must be a finite number"),  # too big for a float
        (0, positive, "value out of range"),
        (-0.5, non_negative, "value out of range"),
        (1.5, unit_interval, "value out of range"),
    ],
)
def test_settle_number_refuses_with_the_precise_message(
    value: object, in_range: Callable[[float], bool], message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        settle(value, in_range)
    assert str(raised.value) == message


# --- enums ----------------------------------------------------------------------


def test_settle_enum_stores_the_member_or_lists_the_allowed_values() -> None:
    holder = Holder("sell")
    settle_enum(cast("Event", holder), "value", OrderSide)
    assert holder.value is OrderSide.SELL
    with pytest.raises(ValueError, match="^value must be one of buy, sell, got 'short'$"):
        settle_enum(cast("Event", Holder("short")), "value", OrderSide)


# --- timestamps -----------------------------------------------------------------


def test_settle_timestamp_accepts_utc_within_the_plausible_range() -> None:
    settle_timestamp(datetime(2000, 1, 1, tzinfo=UTC))
    settle_timestamp(datetime.now(UTC) + timedelta(hours=23))
    settle_timestamp(datetime(2024, 1, 1, tzinfo=timezone(timedelta(0))))  # a zero offset


@pytest.mark.parametrize(
    ("stamp", "message"),
    [
        ("2024-01-01T00:00:00Z", "Timestamp must be a datetime, got str"),
        (datetime(2024, 1, 1), "Timestamp must be timezone-aware UTC"),
        (datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1))),
         "Timestamp must be timezone-aware UTC"),
        (datetime(1999, 12, 31, 23, 59, tzinfo=UTC), "Timestamp 1999-12-31T23:59:00+00:00 is "
         "implausible: must be after 2000-01-01 and at most 1 day in the future"),
    ],
)
def test_settle_timestamp_refuses_with_the_precise_message(stamp: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        settle_timestamp(stamp)
    assert str(raised.value) == message


def test_settle_timestamp_refuses_more_than_a_day_ahead() -> None:
    with pytest.raises(ValueError, match="at most 1 day in the future"):
        settle_timestamp(datetime.now(UTC) + timedelta(days=1, minutes=5))


# --- JSON objects ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, "x", True, 3, 2.5, [], {}, {"a": [1, {"b": None}], "c": "d"}],
)
def test_json_problem_finds_none_in_what_json_round_trips(value: object) -> None:
    assert json_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (math.nan, " must hold only finite numbers"),
        ({"a": {"b": [1, math.inf]}}, ".a.b[1] must hold only finite numbers"),
        ({1: "x"}, " keys must be strings, got 1"),
        ({"at": datetime(2024, 1, 1, tzinfo=UTC)}, ".at holds a datetime, which has no JSON form"),
        ([(1, 2)], "[0] holds a tuple, which has no JSON form"),
        ({"s": {1, 2}}, ".s holds a set, which has no JSON form"),
    ],
)
def test_json_problem_says_where_and_what(value: object, problem: str) -> None:
    assert json_problem(value) == problem


def test_check_json_object_requires_a_dict_that_round_trips() -> None:
    check_json_object({"strategy": "ma", "params": [1, 2.5]}, "metadata")
    with pytest.raises(ValueError, match="^metadata must be a dict, got list$"):
        check_json_object([], "metadata")
    with pytest.raises(ValueError, match=r"^metadata\.ratio must hold only finite numbers$"):
        check_json_object({"ratio": math.nan}, "metadata")
