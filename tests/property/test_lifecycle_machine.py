"""Model-based test of OrderLifecycle over random sequences of order events and fills.

A plain model keeps, per order, its quantity, status and the fills it accepted;
each rule sends one kind of event (a new order, any status change, a fill that
fits, one that over-fills, a redelivery, a re-reported fill id) and checks the
outcome against the model, which spells the lifecycle's rules out again on its
own. Invariants: no order is ever in a state its fills contradict, filled
quantity never exceeds the order quantity, and the table's filled quantity
equals the sum of the fills it accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import event as note_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from silvertine_streams.demo.trading import OrderLifecycle, RejectCode, Rejection, Transition
from silvertine_streams.events import FillEvent, OrderEvent, OrderSide, OrderStatus, OrderType

S = OrderStatus
ORDER_IDS = [f"o{i}" for i in range(3)]
order_ids = st.sampled_from(ORDER_IDS)
quantities = st.sampled_from([1.0, 3.0, 100.0, 0.3, 0.7]) | st.floats(0.001, 1e6)

# The legal moves, written out independently of the module's own table.
STATUS_MOVES = {
    (S.PENDING, S.SUBMITTED), (S.PENDING, S.REJECTED), (S.PENDING, S.CANCELLED),
    (S.SUBMITTED, S.REJECTED), (S.SUBMITTED, S.CANCELLED),
    (S.PARTIALLY_FILLED, S.CANCELLED),
}
FILL_MOVES = {
    (S.SUBMITTED, S.PARTIALLY_FILLED), (S.SUBMITTED, S.FILLED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED), (S.PARTIALLY_FILLED, S.FILLED),
}


def tolerance(quantity: float) -> float:
    return 1e-9 * max(1.0, quantity)


@dataclass
class ModelOrder:
    quantity: float
    status: OrderStatus = S.PENDING
    filled: float = 0.0  # summed in arrival order, as the table does
    fills: list[FillEvent] = field(default_factory=list)


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = OrderLifecycle()
        self.model: dict[str, ModelOrder] = {}
        self.applied: list[OrderEvent | FillEvent] = []
        self.fill_count = 0

    # ----------------------------------------------------------------- helpers

    def _order_event(self, order_id: str, status: OrderStatus, quantity: float) -> OrderEvent:
        return OrderEvent(order_id=order_id, symbol="AAPL", side=OrderSide.BUY,
                          quantity=quantity, order_type=OrderType.LIMIT, price=10.0,
                          status=status)

    def _fill_event(self, order_id: str, qty: float, trade_id: str | None = None) -> FillEvent:
        # Contract-shaped fills: no side (the order's is taken), the trade id as the key.
        self.fill_count += 1
        return FillEvent(order_id=order_id, symbol="AAPL", executed_quantity=qty,
                         executed_price=10.0 + self.fill_count % 7,
                         trade_id=trade_id or f"t{self.fill_count}")

    def _apply(self, event: OrderEvent | FillEvent) -> Transition | Rejection:
        outcome = self.table.apply(event)
        if isinstance(outcome, Transition):
            self.applied.append(event)
            move = (outcome.before, outcome.after)
            legal = STATUS_MOVES if isinstance(event, OrderEvent) else FILL_MOVES
            assert outcome.before is None or move in legal, move
            note_event(f"{type(event).__name__}: {move[0]} -> {move[1].value}")
        return outcome

    def _expect_rejection(self, outcome: Transition | Rejection, code: RejectCode) -> None:
        assert isinstance(outcome, Rejection), outcome
        assert outcome.code is code, (outcome.code, outcome.reason)
        assert outcome.reason and outcome.dlq_reason.startswith(code.value)

    def _send_fill(self, order_id: str, qty: float) -> None:
        order = self.model.get(order_id)
        outcome = self._apply(self._fill_event(order_id, qty))
        if isinstance(outcome, Rejection):
            note_event(f"fill rejected: {outcome.code.value}")
        if order is None:
            self._expect_rejection(outcome, RejectCode.UNKNOWN_ORDER)
            return
        if order.status not in (S.SUBMITTED, S.PARTIALLY_FILLED):
            self._expect_rejection(outcome, RejectCode.ILLEGAL_TRANSITION)
            return
        filled = order.filled + qty
        if filled > order.quantity + tolerance(order.quantity):
            self._expect_rejection(outcome, RejectCode.OVER_FILL)
            return
        assert isinstance(outcome, Transition), outcome
        assert isinstance(outcome.event, FillEvent)
        order.filled = filled
        order.fills.append(outcome.event)
        order.status = (S.FILLED if filled >= order.quantity - tolerance(order.quantity)
                        else S.PARTIALLY_FILLED)
        assert outcome.after is order.status
        assert outcome.filled_qty == filled

    # ----------------------------------------------------------------- rules

    @rule(order_id=order_ids, quantity=quantities)
    def place(self, order_id: str, quantity: float) -> None:
        outcome = self._apply(self._order_event(order_id, S.PENDING, quantity))
        if order_id in self.model:
            self._expect_rejection(outcome, RejectCode.DUPLICATE_ORDER)
        else:
            assert isinstance(outcome, Transition) and outcome.after is S.PENDING
            self.model[order_id] = ModelOrder(quantity)

    @rule(order_id=order_ids, status=st.sampled_from(list(OrderStatus)))
    def change_status(self, order_id: str, status: OrderStatus) -> None:
        order = self.model.get(order_id)
        quantity = order.quantity if order else 1.0
        outcome = self._apply(self._order_event(order_id, status, quantity))
        if order is None:
            if status is S.PENDING:
                assert isinstance(outcome, Transition) and outcome.after is S.PENDING
                self.model[order_id] = ModelOrder(quantity)
            else:
                self._expect_rejection(outcome, RejectCode.UNKNOWN_ORDER)
        elif status is S.PENDING:
            self._expect_rejection(outcome, RejectCode.DUPLICATE_ORDER)
        elif status in (S.PARTIALLY_FILLED, S.FILLED):
            self._expect_rejection(outcome, RejectCode.DERIVED_STATUS)
        elif (order.status, status) in STATUS_MOVES:
            assert isinstance(outcome, Transition) and outcome.after is status
            order.status = status
        else:
            self._expect_rejection(outcome, RejectCode.ILLEGAL_TRANSITION)

    @rule(order_id=order_ids)
    def submit(self, order_id: str) -> None:
        # The common path, drawn on its own so fills meet working orders often.
        self.change_status(order_id, S.SUBMITTED)

    @rule(order_id=order_ids, share=st.floats(0.01, 1.0))
    def fill_within(self, order_id: str, share: float) -> None:
        order = self.model.get(order_id)
        left = order.quantity - order.filled if order else 1.0
        self._send_fill(order_id, max(left * share, 1e-6))

    @rule(order_id=order_ids)
    def fill_the_rest(self, order_id: str) -> None:
        order = self.model.get(order_id)
        left = order.quantity - order.filled if order else 1.0
        if left > 0:
            self._send_fill(order_id, left)

    @rule(order_id=order_ids, excess=st.floats(1e-3, 10.0))
    def over_fill(self, order_id: str, excess: float) -> None:
        order = self.model.get(order_id)
        if order is None:
            return
        qty = max(0.0, order.quantity - order.filled) + excess * order.quantity
        assert order.filled + qty > order.quantity + tolerance(order.quantity)  # really over
        outcome = self.table.apply(self._fill_event(order_id, qty))
        assert isinstance(outcome, Rejection), outcome  # never accepted, whatever the status
        note_event(f"over_fill rejected as {outcome.code.value}")

    @rule(order_id=order_ids, qty=quantities)
    def any_fill(self, order_id: str, qty: float) -> None:
        self._send_fill(order_id, qty)

    @precondition(lambda self: bool(self.applied))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        event = data.draw(st.sampled_from(self.applied))
        self._expect_rejection(self.table.apply(event), RejectCode.DUPLICATE_EVENT)

    @precondition(lambda self: any(o.fills for o in self.model.values()))
    @rule(data=st.data())
    def repeat_trade_id(self, data: st.DataObject) -> None:
        fill = data.draw(st.sampled_from([f for o in self.model.values() for f in o.fills]))
        again = self._fill_event(fill.order_id, fill.executed_quantity, trade_id=fill.trade_id)
        self._expect_rejection(self.table.apply(again), RejectCode.DUPLICATE_FILL)

    # ----------------------------------------------------------------- invariants

    @invariant()
    def table_matches_model(self) -> None:
        snapshot = self.table.snapshot()
        assert set(snapshot) == set(self.model)
        for order_id, order in self.model.items():
            state = snapshot[order_id]
            assert state.status is order.status
            assert state.filled_qty == order.filled
            assert state.fills == len(order.fills)

    @invariant()
    def no_state_contradicts_its_fills(self) -> None:
        for state in self.table.snapshot().values():
            tol = tolerance(state.quantity)
            assert state.filled_qty <= state.quantity + tol
            if state.status is S.FILLED:
                assert abs(state.filled_qty - state.quantity) <= tol
            elif state.status is S.PARTIALLY_FILLED:
                assert 0.0 < state.filled_qty < state.quantity - tol
            elif state.status is not S.CANCELLED:
                assert state.filled_qty == 0.0 and state.fills == 0

    @invariant()
    def filled_equals_the_sum_of_accepted_fills(self) -> None:
        accepted = [f for o in self.model.values() for f in o.fills]
        assert self.table.consistent_with(accepted)
        for order_id, order in self.model.items():
            state = self.table.get(order_id)
            assert state is not None
            total = math.fsum(f.executed_quantity for f in order.fills)
            assert abs(state.filled_qty - total) <= tolerance(order.quantity)


LifecycleMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60,
                                              deadline=None)
TestLifecycleMachine = LifecycleMachine.TestCase
