"""Unit tests for silvertine_streams.demo.trading.lifecycle (pure)."""

from __future__ import annotations

import pytest

from silvertine_streams.demo.trading.lifecycle import (
    LEGAL_STATUS_CHANGES,
    OrderLifecycle,
    RejectCode,
    Rejection,
    Transition,
    fill_key,
)
from silvertine_streams.events import (
    FillEvent,
    OrderEvent,
    OrderSide,
    OrderStatus,
    OrderType,
    SystemEvent,
)

S = OrderStatus


def _order(status: OrderStatus = S.PENDING, order_id: str = "o1", qty: float = 100.0,
           **changes: object) -> OrderEvent:
    fields: dict[str, object] = {
        "order_id": order_id, "symbol": "AAPL", "side": OrderSide.BUY, "quantity": qty,
        "order_type": OrderType.LIMIT, "price": 10.0, "status": status, **changes}
    return OrderEvent(**fields)  # type: ignore[arg-type]  # test-built fields


def _fill(qty: float, price: float = 10.0, order_id: str = "o1", fill_id: str | None = None,
          **changes: object) -> FillEvent:
    fields: dict[str, object] = {
        "order_id": order_id, "symbol": "AAPL", "side": OrderSide.BUY, "executed_quantity": qty,
        "executed_price": price, "commission": 0.1, **changes}
    if fill_id is not None:
        fields["fill_id"] = fill_id
    return FillEvent(**fields)  # type: ignore[arg-type]  # test-built fields


def _working(qty: float = 100.0) -> OrderLifecycle:
    lifecycle = OrderLifecycle()
    assert isinstance(lifecycle.apply(_order(qty=qty)), Transition)
    assert isinstance(lifecycle.apply(_order(S.SUBMITTED, qty=qty)), Transition)
    return lifecycle


def _rejected(outcome: Transition | Rejection, code: RejectCode) -> Rejection:
    assert isinstance(outcome, Rejection), outcome
    assert outcome.code is code, outcome.reason
    return outcome


def test_happy_path_with_partial_fills_and_average_price() -> None:
    lifecycle = OrderLifecycle()
    new = lifecycle.apply(_order())
    assert new == Transition("o1", new.event, None, S.PENDING, 0.0, None)
    submitted = lifecycle.apply(_order(S.SUBMITTED))
    assert isinstance(submitted, Transition) and (submitted.before, submitted.after) == (
        S.PENDING, S.SUBMITTED)
    first = lifecycle.apply(_fill(40, 10.0))
    assert isinstance(first, Transition)
    assert (first.before, first.after, first.filled_qty) == (S.SUBMITTED, S.PARTIALLY_FILLED, 40)
    last = lifecycle.apply(_fill(60, 10.5))
    assert isinstance(last, Transition)
    assert (last.before, last.after, last.filled_qty) == (S.PARTIALLY_FILLED, S.FILLED, 100)
    assert last.avg_price == pytest.approx(10.3)
    snap = lifecycle.get("o1")
    assert snap is not None
    assert (snap.status, snap.fills, snap.remaining_qty) == (S.FILLED, 2, 0.0)
    assert snap.commission == pytest.approx(0.2)


def test_fractional_fills_that_sum_to_the_quantity_fill_it() -> None:
    lifecycle = _working(qty=0.3)
    lifecycle.apply(_fill(0.1))
    lifecycle.apply(_fill(0.1))
    outcome = lifecycle.apply(_fill(0.1))  # 0.1 + 0.1 + 0.1 != 0.3 in floats
    assert isinstance(outcome, Transition) and outcome.after is S.FILLED


def test_over_fill_is_rejected_and_changes_nothing() -> None:
    lifecycle = _working()
    lifecycle.apply(_fill(70))
    rejection = _rejected(lifecycle.apply(_fill(31, fill_id="f-big")), RejectCode.OVER_FILL)
    assert rejection.reason == ("fill f-big of 31 would bring order o1 to 101 filled, more than "
                                "its quantity 100")
    assert rejection.dlq_reason.startswith("over_fill: fill f-big")
    snap = lifecycle.get("o1")
    assert snap is not None and (snap.filled_qty, snap.status) == (70, S.PARTIALLY_FILLED)
    assert isinstance(lifecycle.apply(_fill(30)), Transition)


def test_fills_on_unknown_pending_or_final_orders_are_illegal() -> None:
    lifecycle = OrderLifecycle()
    _rejected(lifecycle.apply(_fill(1, order_id="nope")), RejectCode.UNKNOWN_ORDER)
    lifecycle.apply(_order())
    reason = _rejected(lifecycle.apply(_fill(1)), RejectCode.ILLEGAL_TRANSITION).reason
    assert "pending and has not been submitted yet" in reason
    lifecycle.apply(_order(S.SUBMITTED))
    lifecycle.apply(_fill(100))
    reason = _rejected(lifecycle.apply(_fill(1)), RejectCode.ILLEGAL_TRANSITION).reason
    assert "filled and takes no more fills" in reason
    lifecycle.apply(_order(order_id="o2"))
    lifecycle.apply(_order(S.REJECTED, order_id="o2"))
    _rejected(lifecycle.apply(_fill(1, order_id="o2")), RejectCode.ILLEGAL_TRANSITION)


@pytest.mark.parametrize("before", [S.PENDING, S.SUBMITTED, S.PARTIALLY_FILLED, S.FILLED,
                                    S.CANCELLED, S.REJECTED])
@pytest.mark.parametrize("status", [S.SUBMITTED, S.CANCELLED, S.REJECTED])
def test_status_changes_follow_the_table(before: OrderStatus, status: OrderStatus) -> None:
    lifecycle = OrderLifecycle()
    lifecycle.apply(_order())
    paths: dict[OrderStatus, list[OrderEvent | FillEvent]] = {
        S.PENDING: [], S.SUBMITTED: [_order(S.SUBMITTED)],
        S.PARTIALLY_FILLED: [_order(S.SUBMITTED), _fill(1)],
        S.FILLED: [_order(S.SUBMITTED), _fill(100)],
        S.CANCELLED: [_order(S.CANCELLED)], S.REJECTED: [_order(S.REJECTED)]}
    steps = paths[before]
    for step in steps:
        assert isinstance(lifecycle.apply(step), Transition)
    outcome = lifecycle.apply(_order(status))
    if status in LEGAL_STATUS_CHANGES[before]:
        assert isinstance(outcome, Transition) and outcome.after is status
    else:
        rejection = _rejected(outcome, RejectCode.ILLEGAL_TRANSITION)
        assert rejection.reason == (f"order o1 cannot go from {before.value} to "
                                    f"{status.value}")
        snap = lifecycle.get("o1")
        assert snap is not None and snap.status is before


def test_fill_states_cannot_be_sent_as_order_events() -> None:
    lifecycle = _working()
    for status in (S.PARTIALLY_FILLED, S.FILLED):
        reason = _rejected(lifecycle.apply(_order(status)), RejectCode.DERIVED_STATUS).reason
        assert "fill states come only from fill events" in reason


def test_unknown_and_duplicate_orders() -> None:
    lifecycle = OrderLifecycle()
    _rejected(lifecycle.apply(_order(S.SUBMITTED)), RejectCode.UNKNOWN_ORDER)
    placed = _order()
    lifecycle.apply(placed)
    _rejected(lifecycle.apply(_order()), RejectCode.DUPLICATE_ORDER)
    _rejected(lifecycle.apply(placed), RejectCode.DUPLICATE_EVENT)
    assert lifecycle.rejections == {RejectCode.UNKNOWN_ORDER: 1, RejectCode.DUPLICATE_ORDER: 1,
                                    RejectCode.DUPLICATE_EVENT: 1}


def test_redelivered_events_and_repeated_fill_ids() -> None:
    lifecycle = _working()
    fill = _fill(10, fill_id="f1")
    lifecycle.apply(fill)
    _rejected(lifecycle.apply(fill), RejectCode.DUPLICATE_EVENT)
    _rejected(lifecycle.apply(_fill(10, fill_id="f1")), RejectCode.DUPLICATE_FILL)
    snap = lifecycle.get("o1")
    assert snap is not None and snap.filled_qty == 10


def test_a_re_sent_trade_id_is_a_duplicate_fill() -> None:
    lifecycle = _working()
    assert isinstance(lifecycle.apply(_fill(10, trade_id="T-1", fill_id="f1")), Transition)
    reason = _rejected(lifecycle.apply(_fill(10, trade_id="T-1", fill_id="f2")),
                       RejectCode.DUPLICATE_FILL).reason
    assert reason == "fill T-1 of order o1 was already applied"
    assert isinstance(lifecycle.apply(_fill(10, trade_id="T-2", fill_id="f1")), Transition)


def test_fill_key_prefers_the_trade_id_then_the_fill_id_then_the_event_id() -> None:
    assert fill_key(_fill(1, trade_id="T", fill_id="F")) == "T"
    assert fill_key(_fill(1, fill_id="F")) == "F"
    bare = _fill(1)
    assert fill_key(bare) == bare.event_id


def test_a_fill_without_a_side_takes_its_orders() -> None:
    lifecycle = _working()
    contract_fill = FillEvent(order_id="o1", symbol="AAPL", executed_quantity=100.0,
                              executed_price=10.0, trade_id="T-9")
    outcome = lifecycle.apply(contract_fill)
    assert isinstance(outcome, Transition) and outcome.after is S.FILLED


def test_mismatched_updates_and_fills() -> None:
    lifecycle = OrderLifecycle()
    lifecycle.apply(_order())
    reason = _rejected(lifecycle.apply(_order(S.SUBMITTED, qty=50)), RejectCode.MISMATCH).reason
    assert reason == "submitted for order o1 has quantity 50, not 100"
    _rejected(lifecycle.apply(_order(S.SUBMITTED, symbol="MSFT")), RejectCode.MISMATCH)
    lifecycle.apply(_order(S.SUBMITTED))
    reason = _rejected(lifecycle.apply(_fill(1, side=OrderSide.SELL, fill_id="f9")),
                       RejectCode.MISMATCH).reason
    assert reason == "fill f9 is sell AAPL but order o1 is buy AAPL"


def test_other_event_types_are_a_programming_error() -> None:
    with pytest.raises(TypeError, match="SystemEvent"):
        OrderLifecycle().apply(SystemEvent(kind="x"))  # type: ignore[arg-type]  # on purpose


def test_consistency_check_against_logged_fills() -> None:
    lifecycle = _working()
    accepted = [_fill(30), _fill(20)]
    for fill in accepted:
        lifecycle.apply(fill)
    assert lifecycle.consistent_with(accepted)
    assert lifecycle.fill_discrepancies(accepted[:1]) == {"o1": (50.0, 30.0)}
    stray = _fill(5, order_id="ghost")
    assert lifecycle.fill_discrepancies([*accepted, stray]) == {"ghost": (0.0, 5.0)}
    assert not lifecycle.consistent_with([*accepted, stray])


def test_views_for_the_live_table() -> None:
    lifecycle = _working()
    lifecycle.apply(_order(order_id="o2"))
    assert len(lifecycle) == 2 and "o2" in lifecycle and "o3" not in lifecycle
    assert list(lifecycle.snapshot()) == ["o1", "o2"]
    counts = lifecycle.status_counts()
    assert counts[S.SUBMITTED] == 1 and counts[S.PENDING] == 1 and counts[S.FILLED] == 0
    assert lifecycle.get("o3") is None
