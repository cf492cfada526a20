"""Unit tests for silvertine_streams.demo.trading.feed (pure, seeded)."""

from __future__ import annotations

import math

import pytest

from silvertine_streams.demo.trading.feed import MarketFeed, mid_price
from silvertine_streams.domain.sequencing import OutcomeKind, SequenceTracker, stream_of
from silvertine_streams.events import MarketDataEvent

SYMBOLS = ("AAPL", "MSFT", "NVDA")


def _fields(md: MarketDataEvent) -> tuple[object, ...]:
    return (md.symbol, md.price, md.volume, md.bid, md.ask, md.bid_size, md.ask_size, md.sequence)


def test_same_seed_same_ticks_other_seed_other_ticks() -> None:
    a = [_fields(t) for t in MarketFeed(SYMBOLS, seed=7).ticks(300)]
    b = [_fields(t) for t in MarketFeed(SYMBOLS, seed=7).ticks(300)]
    c = [_fields(t) for t in MarketFeed(SYMBOLS, seed=8).ticks(300)]
    assert a == b
    assert a != c


def test_event_ids_stay_unique_across_equal_seeds() -> None:
    # Equal seeds must not replay event ids: the log would call them conflicts.
    a = MarketFeed(SYMBOLS, seed=1).ticks(5)
    b = MarketFeed(SYMBOLS, seed=1).ticks(5)
    assert not {t.event_id for t in a} & {t.event_id for t in b}


def test_quotes_are_on_the_tick_grid_with_spread_in_range() -> None:
    feed = MarketFeed(SYMBOLS, seed=3, tick_size=0.05, spread_ticks=(2, 4), vol=0.01)
    for md in feed.ticks(2000):
        assert md.bid is not None and md.ask is not None
        assert 0 < md.bid < md.ask
        spread = round((md.ask - md.bid) / 0.05)
        assert 2 <= spread <= 4
        for price in (md.bid, md.ask, md.price):
            assert math.isclose(price / 0.05, round(price / 0.05), abs_tol=1e-6)
        assert md.price in (md.bid, md.ask)
        assert md.volume > 0 and md.bid_size and md.ask_size
        assert md.source == "demo-feed"


def test_mid_stays_positive_under_extreme_volatility() -> None:
    feed = MarketFeed(["X"], seed=0, vol=2.0, start_price=0.05)
    for md in feed.ticks(500):
        assert md.bid is not None and md.bid >= 0.01


def test_sequences_count_from_one_per_symbol_and_ticks_round_robin() -> None:
    feed = MarketFeed(SYMBOLS, seed=1)
    first = feed.ticks(4)
    second = feed.ticks(3)
    assert [t.symbol for t in first + second] == ["AAPL", "MSFT", "NVDA", "AAPL", "MSFT",
                                                   "NVDA", "AAPL"]
    assert [t.sequence for t in first + second] == [1, 1, 1, 2, 2, 2, 3]
    tracker = SequenceTracker()
    assert all(tracker.observe(stream_of(t), t.sequence or 0).kind is OutcomeKind.IN_ORDER
               for t in first + second)


def test_next_tick_walks_the_named_symbol_only() -> None:
    feed = MarketFeed(SYMBOLS, seed=1, start_price={"AAPL": 10.0, "MSFT": 20.0, "NVDA": 30.0})
    before = feed.mid("MSFT")
    md = feed.next_tick("AAPL")
    assert md.symbol == "AAPL" and md.sequence == 1
    assert feed.mid("MSFT") == before == 20.0
    assert abs(mid_price(md) - feed.mid("AAPL")) <= 0.02


def test_unknown_symbol_and_bad_arguments_are_refused() -> None:
    feed = MarketFeed(SYMBOLS, seed=1)
    with pytest.raises(ValueError, match="not quoted"):
        feed.next_tick("TSLA")
    with pytest.raises(ValueError, match="distinct"):
        MarketFeed(["A", "A"], seed=1)
    with pytest.raises(ValueError, match="spread_ticks"):
        MarketFeed(["A"], seed=1, spread_ticks=(0, 2))
    with pytest.raises(ValueError, match="start_price"):
        MarketFeed(["A", "B"], seed=1, start_price={"A": 1.0})


def test_skip_makes_a_gap_the_tracker_reports() -> None:
    feed = MarketFeed(["AAPL"], seed=1)
    tracker = SequenceTracker()
    tracker.observe(stream_of(first := feed.next_tick("AAPL")), first.sequence or 0)
    assert list(feed.skip("AAPL", 3)) == [2, 3, 4]
    after = feed.next_tick("AAPL")
    assert after.sequence == 5
    outcome = tracker.observe(stream_of(after), after.sequence)
    assert (outcome.kind, outcome.expected, outcome.got) == (OutcomeKind.GAP, 2, 5)


def test_inject_duplicate_repeats_the_same_event() -> None:
    md = MarketFeed(SYMBOLS, seed=1).next_tick("AAPL")
    copies = MarketFeed.inject_duplicate(md, copies=2)
    assert copies == [md, md, md]
    assert len({c.event_id for c in copies}) == 1


def test_inject_out_of_order_swaps_within_one_stream() -> None:
    feed = MarketFeed(SYMBOLS, seed=1)
    events = feed.ticks(6)  # AAPL1 MSFT1 NVDA1 AAPL2 MSFT2 NVDA2
    shuffled = feed.inject_out_of_order(events)
    assert [(t.symbol, t.sequence) for t in shuffled] == [
        ("AAPL", 2), ("MSFT", 1), ("NVDA", 1), ("AAPL", 1), ("MSFT", 2), ("NVDA", 2)]
    assert [t.sequence for t in events][:1] == [1]  # the input list is left alone
    moved = feed.inject_out_of_order(events, index=1)
    assert [(t.symbol, t.sequence) for t in moved][1::3] == [("MSFT", 2), ("MSFT", 1)]
    tracker = SequenceTracker()
    kinds = [tracker.observe(stream_of(t), t.sequence or 0).kind for t in shuffled]
    assert OutcomeKind.STALE in kinds


def test_inject_out_of_order_needs_two_events_of_a_stream() -> None:
    feed = MarketFeed(SYMBOLS, seed=1)
    with pytest.raises(ValueError, match="same stream"):
        feed.inject_out_of_order(feed.ticks(3))
    with pytest.raises(ValueError, match="same stream"):
        feed.inject_out_of_order(feed.ticks(6), index=5)
