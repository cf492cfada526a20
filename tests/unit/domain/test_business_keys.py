"""Unit tests for silvertine_streams.domain.business_keys: which events have a domain identity."""

from __future__ import annotations

from silvertine_streams.domain.business_keys import KEY_SEPARATOR, business_key, describe
from silvertine_streams.events import FillEvent, MarketDataEvent, OrderEvent


def fill(**fields: object) -> FillEvent:
    base: dict[str, object] = {"order_id": "o-1", "symbol": "AAPL", "executed_quantity": 1.0,
                               "executed_price": 10.0}
    return FillEvent(**{**base, **fields})  # type: ignore[arg-type]


def test_a_fill_is_keyed_by_its_venue_and_trade_id_not_its_event_id() -> None:
    a, b = fill(trade_id="T-9", exchange="XNAS"), fill(trade_id="T-9", exchange="XNAS")
    assert a.event_id != b.event_id and business_key(a) == business_key(b) != ""
    assert business_key(fill(trade_id="T-9", exchange="XLON")) != business_key(a)
    assert describe(business_key(a)) == "trade T-9 of venue XNAS"


def test_without_an_exchange_the_source_names_the_venue() -> None:
    assert business_key(fill(trade_id="T-1", source="gw-1")) != business_key(
        fill(trade_id="T-1", source="gw-2"))


def test_no_key_without_a_trade_id_or_for_other_types() -> None:
    assert business_key(fill()) == ""
    assert business_key(OrderEvent(order_id="o-1", symbol="AAPL", quantity=1.0)) == ""
    assert business_key(MarketDataEvent(symbol="AAPL", price=1.0)) == ""


def test_a_key_can_never_equal_an_event_id() -> None:
    assert business_key(fill(trade_id="T-1", exchange="X")).startswith(KEY_SEPARATOR)
