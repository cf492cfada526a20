"""The --where filter language: what it accepts, what it refuses, what it means."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from silvertine_streams.events import (
    MarketDataEvent,
    OrderEvent,
    OrderSide,
    OrderType,
    SignalEvent,
    SignalType,
    SystemEvent,
)
from silvertine_streams.replay.where import InvalidFilter, compile_where

TICK = MarketDataEvent(symbol="AAPL", price=150.0, volume=10.0, bid=149.9, ask=150.1,
                       source="feed-a", metadata={"venue": "XNAS", "depth": {"levels": 3}},
                       timestamp=datetime(2025, 3, 1, 14, 30, tzinfo=UTC))
ORDER = OrderEvent(order_id="o-1", symbol="MSFT", side=OrderSide.BUY, quantity=200,
                   order_type=OrderType.LIMIT, price=99.5, source="oms")
SIGNAL = SignalEvent(symbol="AAPL", strategy_id="mom", signal_type=SignalType.SHORT,
                     strength=-0.5)


def matches(expression: str, event: object) -> bool:
    return compile_where(expression)(event)  # type: ignore[arg-type]  # events only


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("price > 100", True),
        ("price >= 150 and price <= 150", True),
        ("100 < price < 200", True),
        ("100 < price < 120", False),
        ("price > 100 and symbol == 'MSFT'", False),
        ("price > 100 or symbol == 'MSFT'", True),
        ("not price > 100", False),
        ("symbol in ('AAPL', 'MSFT')", True),
        ("symbol not in ['AAPL']", False),
        ("source != 'feed-b'", True),
        ("bid is not None and ask is not None", True),
        ("bid_size is None", True),
        ("price > -1", True),
        ("volume == 10", True),  # int literal against a float field
        ("metadata.venue == 'XNAS'", True),
        ("metadata.depth.levels >= 3", True),
        ("metadata.missing == 1", False),
        ("event_type == 'market_data'", True),
        ("timestamp >= '2025-03-01T14:30:00Z'", True),
        ("timestamp < '2025-03-01T14:30:00+00:00'", False),
        ("timestamp > '2025-03-01T09:00:00-05:00'", True),  # 14:00 UTC
        ("True", True),
        ("bid", True),
        ("bid_size", False),
    ],
)
def test_expressions_on_market_data(expression: str, expected: bool) -> None:
    assert matches(expression, TICK) is expected


def test_enum_fields_compare_with_their_values() -> None:
    assert matches("side == 'buy' and order_type == 'limit'", ORDER)
    assert matches("signal_type == 'short' and strength < 0", SIGNAL)


def test_a_field_the_event_lacks_is_false_not_an_error() -> None:
    predicate = compile_where("price > 100", ["market_data", "signal"])
    assert predicate(TICK)
    assert not predicate(SIGNAL)  # signals have no price
    assert compile_where("not price > 100", ["market_data", "signal"])(SIGNAL)


def test_values_that_cannot_be_ordered_are_false_not_an_error() -> None:
    assert not matches("symbol > 5", TICK)
    assert not matches("price < 'abc'", TICK)
    assert not matches("bid_size > 1", TICK)  # None


def test_system_event_details_are_reachable() -> None:
    event = SystemEvent(kind="sequence_gap", details={"expected": 4, "got": 7})
    assert matches("kind == 'sequence_gap' and details.got > details.expected", event)
    assert not matches("details.got < details.expected", event)


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('true')", "function call"),
        ("price.__class__ == 1", "only metadata.<key> and details.<key>"),
        ("().__class__.__bases__", "only metadata.<key>"),
        ("price * 2 > 100", "arithmetic"),
        ("symbol[0] == 'A'", "indexing"),
        ("(lambda: 1)()", "function call"),
        ("prcie > 100", "unknown field 'prcie'"),
        ("price > 100 and", "not a valid expression"),
        ("x := 1", "not a valid expression"),
        ("symbol in symbol", "needs a literal list"),
        ("bid is 5", "only compare with None"),
        ("[i for i in (1, 2)]", "not allowed"),
        ("price > {1: 2}", "not allowed"),
        ("-symbol == 1", "a sign may only stand before a number"),
        ("symbol in (source, 'A')", "only literals"),
        ("'AAPL'", "not allowed here"),
    ],
)
def test_anything_outside_the_language_is_refused(expression: str, reason: str) -> None:
    with pytest.raises(InvalidFilter, match=reason.replace("(", r"\(").replace("[", r"\[")):
        compile_where(expression)


def test_unknown_fields_are_judged_against_the_chosen_types() -> None:
    compile_where("strength > 0.5", ["signal"])
    with pytest.raises(InvalidFilter, match="unknown field 'strength'"):
        compile_where("strength > 0.5", ["order"])


def test_bad_timestamp_literal_is_refused() -> None:
    with pytest.raises(InvalidFilter, match="not an ISO-8601 time"):
        compile_where("timestamp > 'yesterday'")


def test_deep_nesting_and_huge_expressions_are_refused() -> None:
    with pytest.raises(InvalidFilter, match="nested deeper"):
        compile_where("not " * 40 + "price > 1")
    with pytest.raises(InvalidFilter, match="longer than"):
        compile_where("price > 1 or " * 300 + "price > 1")
