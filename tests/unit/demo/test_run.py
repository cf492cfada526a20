"""Unit tests for silvertine_streams.demo.run: the pure helpers behind ``silvertine demo``
(what it injects into the feed, and how it shows the desk and the summary).

The demo itself (servers, worker, live view) runs in tests/integration/test_demo.py.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from silvertine_streams.demo.run import (
    DemoRun,
    _desk_tables,
    _inject,
    _injections_line,
    _ms,
    _summary,
)
from silvertine_streams.demo.trading.feed import MarketFeed
from silvertine_streams.events.model import MarketDataEvent
from silvertine_streams.settings import load_settings

STARTED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def render(*renderables: Table) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    for renderable in renderables:
        console.print(renderable)
    return out.getvalue()


def sequences(ticks: list[MarketDataEvent], symbol: str) -> list[int]:
    return [t.sequence for t in ticks if t.symbol == symbol and t.sequence is not None]


def test_inject_adds_a_duplicate_an_out_of_order_pair_and_a_gap() -> None:
    feed = MarketFeed(["AAA", "BBB"], seed=1)
    ticks = feed.ticks(6)  # AAA 1, BBB 1, AAA 2, BBB 2, AAA 3, BBB 3
    run = DemoRun(started=STARTED)

    injected = _inject(feed, ticks, run)

    assert run.injected == {"duplicates": 1, "out_of_order": 1, "gaps": 1}
    # The first tick is sent twice (same event id: the log must keep one).
    assert [t.event_id for t in injected].count(ticks[0].event_id) == 2
    assert len(injected) == len(ticks) + 1
    # AAA's ticks are no longer in sequence order; BBB's are untouched.
    assert sequences(injected, "AAA") != sorted(sequences(injected, "AAA"))
    assert sequences(injected, "BBB") == [1, 2, 3]
    # Three AAA sequence numbers are burnt: the next AAA tick shows a gap.
    assert feed.next_tick("AAA").sequence == 3 + 3 + 1
    assert feed.next_tick("BBB").sequence == 4


def test_inject_counts_no_out_of_order_pair_when_no_stream_has_two_ticks() -> None:
    feed = MarketFeed(["AAA", "BBB", "CCC"], seed=1)
    ticks = feed.ticks(3)  # one tick per stream: nothing can be swapped
    run = DemoRun(started=STARTED)

    injected = _inject(feed, ticks, run)

    # Swapping the duplicate with its original reorders nothing, so it is not counted.
    assert run.injected == {"duplicates": 1, "out_of_order": 0, "gaps": 1}
    assert [t.sequence for t in injected] == [1, 1, 1, 1]
    assert [t.event_id for t in injected].count(ticks[0].event_id) == 2


def test_the_injections_line_reports_the_counts() -> None:
    run = DemoRun(started=STARTED)
    run.injected.update(duplicates=4, out_of_order=3, gaps=2)
    line = _injections_line(run)
    assert "4 duplicate ticks" in line
    assert "3 out-of-order pairs" in line
    assert "2 gaps" in line


DESK = {
    "positions": [{"symbol": "AAA", "quantity": 300.0, "avg_cost": 101.234, "mark": None,
                   "realized_pnl": -12.5, "unrealized_pnl": 7.25}],
    "totals": {"net": 1234.5, "commission": 3.2},
    "last_orders": [{"order_id": "ord-7", "symbol": "AAA", "side": "buy", "qty": 300.0,
                     "price": 101.23, "status": "filled", "filled": 300.0}],
    "order_status": {"filled": 1},
    "risk_refused": {"max_position": 2},
    "table_rejections": {},
}


def test_desk_tables_show_positions_and_orders() -> None:
    positions, orders = _desk_tables(DESK)
    assert isinstance(positions, Table) and isinstance(orders, Table)
    assert (positions.row_count, orders.row_count) == (1, 1)
    text = render(positions, orders)
    assert "101.23" in text and "-12.50" in text and "7.25" in text
    assert "0.00" in text  # a position without a mark shows 0.00, not None
    assert "net PnL 1234.50 (commission 3.20)" in text
    assert "ord-7" in text and "filled" in text
    assert orders.caption == ("order table {'filled': 1}; refused by risk "
                              "{'max_position': 2}; refused by the table {}")


def test_desk_tables_of_an_empty_desk_are_empty() -> None:
    positions, orders = _desk_tables({})
    assert (positions.row_count, orders.row_count) == (0, 0)
    assert "net PnL 0.00 (commission 0.00)" in render(positions)


def test_milliseconds_are_shown_to_one_decimal_or_as_a_dash() -> None:
    assert _ms(None) == "-"
    assert _ms(1.26) == "1.3"
    assert _ms(0.0) == "0.0"


def test_the_summary_tells_how_to_replay_the_session(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, metrics_port=9123)
    run = DemoRun(started=STARTED, ended=datetime(2026, 3, 2, 12, 1, 30, tzinfo=UTC),
                  published=500, counts={"market_data": 498, "dlq": 0}, desk=DESK)
    out = io.StringIO()

    _summary(run, Console(file=out, width=300, color_system=None), settings)

    text = out.getvalue()
    assert "canonical logs and dlq: market_data=498, dlq=0" in text
    assert "published market data: 500" in text
    assert (f"SILVERTINE_DATA_DIR={tmp_path} silvertine replay --type order --type fill "
            "--since 2026-03-02T12:00:00+00:00 --until 2026-03-02T12:01:30+00:00 --speed max"
            ) in text
    assert "--url http://127.0.0.1:9123/metrics" in text
    assert "net PnL 1234.50" in text
