"""The public event model: five frozen msgspec Structs in one tagged union.

The field names, the Python defaults and the validation messages are the
platform's event contract (DESIGN §2): code written against the contract
constructs, reads and serialises these events unchanged. Fields the engine adds
(``sequence``, ``ts_ns``, a fill's ``fill_id`` and ``side``, an order's
``time_in_force``) are optional.

Every event validates itself in ``__post_init__``. msgspec runs that hook both
when a caller constructs an event and when it decodes one, so a rule written
here holds on every path (a ``ValueError`` raised on decode surfaces as
``msgspec.ValidationError``). The checks are written as one cheap expression
per field with the full, message-producing check behind it, because decoding
sits on the engine's hot path (DESIGN §5: per-event work must stay cheap).

Every field has the contract's default. For a value the contract requires
(a symbol, a price, a quantity, ...) the default is the empty or zero value,
which validation refuses with the contract's message, so a missing required
value is ``ValueError("Symbol cannot be empty")`` and the like, on construction
and on decode alike, never a ``TypeError``. One default is generous: an order's
``side`` is ``buy``. The constructor keeps that default, but on the wire an
order without ``side`` is a dead letter rather than a silent buy (see
:class:`_OrderMeta`).

The enumerations the fields take live in :mod:`.enums` and the message-producing
rules in :mod:`.validation`; both are re-exported here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeAlias

import msgspec

from silvertine_streams.events.enums import (
    EventPriority,
    EventType,
    OrderSide,
    OrderStatus,
    OrderType,
    Severity,
    SignalType,
    TimeInForce,
)
from silvertine_streams.events.validation import (
    ID_MAX,
    INF,
    SYMBOL_MAX,
    check_common,
    check_json_object,
    check_optional_text,
    check_symbol,
    check_text,
    non_negative,
    positive,
    settle_enum,
    settle_number,
    unit_interval,
)

__all__ = [
    "EVENT_CLASSES",
    "Event",
    "EventPriority",
    "EventType",
    "EventUnion",
    "FillEvent",
    "MarketDataEvent",
    "OrderEvent",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "Severity",
    "SignalEvent",
    "SignalType",
    "SystemEvent",
    "TimeInForce",
]


def _new_id() -> str:
    return str(uuid.uuid4())


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _OrderMeta(msgspec.StructMeta):
    """Give ``OrderEvent``'s constructor defaults the wire must not have.

    msgspec applies a field's default both when a caller constructs an event
    and when it decodes one; for an order's ``side`` the two must differ. The
    contract's constructor takes ``OrderEvent(order_id="o-1", symbol="X",
    quantity=1.0)`` as a buy, but a JSON order that does not say its side is
    more likely a broken producer than a buyer. So ``side`` has no msgspec
    default (the decoder reports "Object missing required field `side`"), and
    the constructor, which alone runs this ``__call__`` (decoding,
    ``msgspec.convert`` and ``with_changes`` build structs directly), fills it
    from the class's ``constructor_defaults`` when the caller left it out.

    Only ``OrderEvent`` has this metaclass: a Python-level ``__call__`` takes
    msgspec's fast constructor away (about 1.5 µs per construction), a price
    worth paying for orders only.
    """

    # Defined for the runtime only: mypy would otherwise take this signature for
    # the constructor instead of the one it derives from the fields.
    if not TYPE_CHECKING:

        def __call__(cls, /, **fields):
            for name, value in cls.constructor_defaults.items():
                if name not in fields:
                    fields[name] = value
            return super().__call__(**fields)


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="event_type",
    # Events hold no references back to themselves; skipping GC tracking saves
    # ~60 ns per decoded event (a cycle through metadata would leak, not crash).
    gc=False,
):
    """Fields and behaviour shared by every event; not constructible itself.

    Attributes:
        event_id: unique id (a UUID4 string unless the producer set one).
        timestamp: when the event happened, timezone-aware UTC (ISO-8601 on the wire).
        source: who produced it (feed, broker, strategy, engine); ``""`` if unsaid.
        metadata: free-form JSON-ready extras.
        sequence: per ``source``/symbol sequence number, if the producer keeps one.
        ts_ns: ingest time in nanoseconds since the epoch.
        event_type: the event's type (a class attribute; the tag on the wire).
        priority: the type's handling priority (a class attribute).
        constructor_defaults: defaults the constructor and ``from_dict`` give
            fields the wire requires (an order's ``side``; see :class:`_OrderMeta`).
    """

    event_type: ClassVar[EventType]
    priority: ClassVar[EventPriority]
    constructor_defaults: ClassVar[Mapping[str, Any]] = {}

    event_id: str = msgspec.field(default_factory=_new_id)
    timestamp: datetime = msgspec.field(default_factory=_utc_now)
    source: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    sequence: int | None = None
    ts_ns: int = msgspec.field(default_factory=time.time_ns)

    def __post_init__(self) -> None:
        raise TypeError("Event is abstract; construct one of its event types")

    @property
    def partition_key(self) -> str:
        """The Kafka message key that keeps this event's stream on one partition."""
        raise NotImplementedError

    def validate(self) -> None:
        """Re-run every validation rule.

        Raises:
            ValueError: a rule is broken; the message says which.
        """
        self.__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """Return the event as JSON-ready builtins: every field, ``None`` ones included.

        ``event_type`` and enum fields are their string values and
        ``timestamp`` is an ISO-8601 UTC string.
        """
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]  # always a dict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build and validate an event from a mapping such as ``to_dict()`` returns.

        On ``Event`` the ``event_type`` key picks the type; on a subclass the key
        may be left out. Enum members or their values and ``datetime`` objects
        or ISO-8601 strings are accepted. Fields left out take the constructor's
        defaults, as in the contract.

        Raises:
            ValueError: the mapping does not describe a valid event.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        fields = dict(data)
        tag = fields.get("event_type")
        if isinstance(tag, EventType):
            fields["event_type"] = tag = tag.value
        target: type[Event]
        if cls is Event:
            if not isinstance(tag, str) or tag not in EVENT_CLASSES:
                raise ValueError(f"unknown event_type {tag!r}; valid types: {_VALID_TYPES}")
            target = EVENT_CLASSES[EventType(tag)]
        else:
            if tag is not None and tag != cls.event_type:
                raise ValueError(f"expected event_type {cls.event_type.value!r}, got {tag!r}")
            target = cls
        for name, value in target.constructor_defaults.items():
            fields.setdefault(name, value)
        try:
            event = msgspec.convert(fields, target)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from exc
        return event  # type: ignore[return-value]  # the class cls or the tag names

    def with_changes(self, **changes: Any) -> Self:
        """Return a validated copy with ``changes`` applied.

        Raises:
            ValueError: the copy breaks a rule.
            TypeError: a name in ``changes`` is not a field.
        """
        return msgspec.structs.replace(self, **changes)  # replace runs __post_init__


# --- the event types -------------------------------------------------------


class MarketDataEvent(Event, tag="market_data", frozen=True, kw_only=True):
    """A trade or quote update for one symbol.

    Attributes:
        symbol: instrument; also the partition key.
        price: last traded (or reference) price, positive.
        volume: traded volume, non-negative.
        bid: best bid, if quoted; never above ``ask``.
        ask: best ask, if quoted.
        bid_size: size at the best bid, non-negative.
        ask_size: size at the best ask, non-negative.
    """

    event_type: ClassVar[EventType] = EventType.MARKET_DATA
    priority: ClassVar[EventPriority] = EventPriority.NORMAL

    symbol: str = ""
    price: float = 0.0
    volume: float = 0.0
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None

    def __post_init__(self) -> None:
        # The hottest path in the engine: check_symbol inlined.
        symbol = self.symbol
        if not (
            type(symbol) is str
            and 0 < len(symbol) <= SYMBOL_MAX
            and symbol[0] != " "
            and symbol[-1] != " "
            and symbol.isprintable()
        ):
            check_symbol(symbol)
        price = self.price
        if not (type(price) is float and 0.0 < price < INF):
            settle_number(self, "price", "Price must be positive", positive)
        volume = self.volume
        if not (type(volume) is float and 0.0 <= volume < INF):
            settle_number(self, "volume", "Volume cannot be negative", non_negative)
        bid, ask = self.bid, self.ask
        if bid is not None and not (type(bid) is float and 0.0 < bid < INF):
            settle_number(self, "bid", "Bid must be positive", positive)
        if ask is not None and not (type(ask) is float and 0.0 < ask < INF):
            settle_number(self, "ask", "Ask must be positive", positive)
        if self.bid is not None and self.ask is not None and self.bid > self.ask:
            raise ValueError("Bid cannot exceed ask")
        size = self.bid_size
        if size is not None and not (type(size) is float and 0.0 <= size < INF):
            settle_number(self, "bid_size", "Bid size cannot be negative", non_negative)
        size = self.ask_size
        if size is not None and not (type(size) is float and 0.0 <= size < INF):
            settle_number(self, "ask_size", "Ask size cannot be negative", non_negative)
        check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol."""
        return self.symbol


class OrderEvent(Event, tag="order", frozen=True, kw_only=True, metaclass=_OrderMeta):
    """An order, or a change in its status.

    Attributes:
        order_id: the order's id, stable across its lifecycle.
        symbol: instrument; also the partition key.
        side: buy or sell. The constructor defaults it to buy, as the contract
            does; on the wire it is required (an order without it is rejected).
        order_type: market, limit, stop or stop_limit.
        quantity: ordered quantity, positive.
        price: limit price; required for limit and stop_limit orders.
        stop_price: trigger price; required for stop and stop_limit orders.
        status: lifecycle status.
        strategy_id: the strategy that placed it; ``""`` if none did.
        time_in_force: how long the order works.
    """

    event_type: ClassVar[EventType] = EventType.ORDER
    priority: ClassVar[EventPriority] = EventPriority.CRITICAL
    constructor_defaults: ClassVar[Mapping[str, Any]] = {"side": OrderSide.BUY}

    order_id: str = ""
    symbol: str = ""
    if TYPE_CHECKING:
        # What type checkers see: the constructor's default (filled by _OrderMeta).
        side: OrderSide = OrderSide.BUY
    else:
        side: OrderSide  # no msgspec default: the decoder requires it
    order_type: OrderType = OrderType.MARKET
    quantity: float = 0.0
    price: float | None = None
    stop_price: float | None = None
    status: OrderStatus = OrderStatus.PENDING
    strategy_id: str = ""
    time_in_force: TimeInForce = TimeInForce.DAY

    def __post_init__(self) -> None:
        check_text(self.order_id, "Order ID", ID_MAX)
        check_symbol(self.symbol)
        if type(self.side) is not OrderSide:
            settle_enum(self, "side", OrderSide)
        quantity = self.quantity
        if not (type(quantity) is float and 0.0 < quantity < INF):
            settle_number(self, "quantity", "Quantity must be positive", positive)
        if type(self.order_type) is not OrderType:
            settle_enum(self, "order_type", OrderType)
        order_type = self.order_type
        price = self.price
        if price is None:
            if order_type is OrderType.LIMIT or order_type is OrderType.STOP_LIMIT:
                raise ValueError(f"{order_type.value} orders require price")
        elif not (type(price) is float and 0.0 < price < INF):
            settle_number(self, "price", "Price must be positive", positive)
        stop_price = self.stop_price
        if stop_price is None:
            if order_type is OrderType.STOP or order_type is OrderType.STOP_LIMIT:
                raise ValueError(f"{order_type.value} orders require stop price")
        elif not (type(stop_price) is float and 0.0 < stop_price < INF):
            settle_number(self, "stop_price", "Stop price must be positive", positive)
        if type(self.status) is not OrderStatus:
            settle_enum(self, "status", OrderStatus)
        check_optional_text(self.strategy_id, "Strategy ID", ID_MAX)
        if type(self.time_in_force) is not TimeInForce:
            settle_enum(self, "time_in_force", TimeInForce)
        check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol."""
        return self.symbol


class FillEvent(Event, tag="fill", frozen=True, kw_only=True):
    """An execution against an order.

    Attributes:
        order_id: the order it fills.
        symbol: instrument; also the partition key.
        executed_quantity: quantity executed, positive.
        executed_price: execution price, positive.
        commission: fees charged, non-negative.
        commission_asset: the currency or asset the commission is in; ``""`` if unsaid.
        exchange: where it executed; ``""`` if unsaid.
        trade_id: the venue's id for the execution, the business key that
            identifies a fill across redeliveries; ``""`` if unsaid.
        fill_id: the engine's own id for the execution, if the producer set one.
        side: buy or sell, if the producer said; the order's side otherwise.
    """

    event_type: ClassVar[EventType] = EventType.FILL
    priority: ClassVar[EventPriority] = EventPriority.CRITICAL

    order_id: str = ""
    symbol: str = ""
    executed_quantity: float = 0.0
    executed_price: float = 0.0
    commission: float = 0.0
    commission_asset: str = ""
    exchange: str = ""
    trade_id: str = ""
    fill_id: str = ""
    side: OrderSide | None = None

    def __post_init__(self) -> None:
        check_text(self.order_id, "Order ID", ID_MAX)
        check_symbol(self.symbol)
        qty = self.executed_quantity
        if not (type(qty) is float and 0.0 < qty < INF):
            settle_number(
                self, "executed_quantity", "Executed quantity must be positive", positive
            )
        price = self.executed_price
        if not (type(price) is float and 0.0 < price < INF):
            settle_number(self, "executed_price", "Executed price must be positive", positive)
        commission = self.commission
        if not (type(commission) is float and 0.0 <= commission < INF):
            settle_number(self, "commission", "Commission cannot be negative", non_negative)
        # Optional texts: one inline test each, the precise check only on failure.
        asset, exchange = self.commission_asset, self.exchange
        if not (type(asset) is str and len(asset) <= SYMBOL_MAX and asset.isprintable()):
            check_optional_text(asset, "Commission asset", SYMBOL_MAX)
        if not (type(exchange) is str and len(exchange) <= SYMBOL_MAX and exchange.isprintable()):
            check_optional_text(exchange, "Exchange", SYMBOL_MAX)
        trade_id, fill_id = self.trade_id, self.fill_id
        if not (type(trade_id) is str and len(trade_id) <= ID_MAX and trade_id.isprintable()):
            check_optional_text(trade_id, "Trade ID", ID_MAX)
        if not (type(fill_id) is str and len(fill_id) <= ID_MAX and fill_id.isprintable()):
            check_optional_text(fill_id, "Fill ID", ID_MAX)
        side = self.side
        if side is not None and type(side) is not OrderSide:
            settle_enum(self, "side", OrderSide)
        check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol."""
        return self.symbol


class SignalEvent(Event, tag="signal", frozen=True, kw_only=True):
    """A strategy's recommendation for one symbol.

    Attributes:
        symbol: instrument; also the partition key.
        signal_type: long, short, exit or neutral.
        strength: conviction in [-1.0, 1.0].
        strategy_id: the strategy that emitted it.
        reason: why, for a person; ``""`` if unsaid.
        target_price: price the strategy aims for, if any; positive.
        stop_loss: price at which to cut the position, if any; positive.
        take_profit: price at which to take the profit, if any; positive.
    """

    event_type: ClassVar[EventType] = EventType.SIGNAL
    priority: ClassVar[EventPriority] = EventPriority.HIGH

    symbol: str = ""
    signal_type: SignalType = SignalType.NEUTRAL
    strength: float = 0.0
    strategy_id: str = ""
    reason: str = ""
    target_price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None

    def __post_init__(self) -> None:
        check_symbol(self.symbol)
        check_text(self.strategy_id, "Strategy ID", ID_MAX)
        if type(self.signal_type) is not SignalType:
            settle_enum(self, "signal_type", SignalType)
        strength = self.strength
        if not (type(strength) is float and -1.0 <= strength <= 1.0):
            settle_number(
                self, "strength", "Signal strength must be between -1.0 and 1.0", unit_interval
            )
        if type(self.reason) is not str:
            raise ValueError(f"reason must be a string, got {type(self.reason).__name__}")
        target = self.target_price
        if target is not None and not (type(target) is float and 0.0 < target < INF):
            settle_number(self, "target_price", "Target price must be positive", positive)
        stop = self.stop_loss
        if stop is not None and not (type(stop) is float and 0.0 < stop < INF):
            settle_number(self, "stop_loss", "Stop loss must be positive", positive)
        take = self.take_profit
        if take is not None and not (type(take) is float and 0.0 < take < INF):
            settle_number(self, "take_profit", "Take profit must be positive", positive)
        check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol."""
        return self.symbol


class SystemEvent(Event, tag="system", frozen=True, kw_only=True):
    """Something the engine or a component reports about itself.

    Attributes:
        kind: what happened, e.g. ``sequence_gap``, ``clock_drift``, ``circuit_open``.
        severity: info, warning, error or critical.
        message: a sentence for a person.
        details: JSON-ready data about it.
        symbol: the symbol concerned, or ``""`` when none is.
    """

    event_type: ClassVar[EventType] = EventType.SYSTEM
    priority: ClassVar[EventPriority] = EventPriority.HIGH

    kind: str = ""
    severity: Severity = Severity.INFO
    message: str = ""
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    symbol: str = ""

    def __post_init__(self) -> None:
        check_text(self.kind, "Kind", SYMBOL_MAX)
        if type(self.severity) is not Severity:
            settle_enum(self, "severity", Severity)
        if type(self.message) is not str:
            raise ValueError(f"message must be a string, got {type(self.message).__name__}")
        details = self.details
        if type(details) is not dict or details:
            check_json_object(details, "details")
        if self.symbol != "":
            check_symbol(self.symbol)
        check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol if one is set, else the kind."""
        return self.symbol or self.kind


EventUnion: TypeAlias = MarketDataEvent | OrderEvent | FillEvent | SignalEvent | SystemEvent
"""Any concrete event; the type the codec decodes into."""

EVENT_CLASSES: Mapping[EventType, type[Event]] = {
    cls.event_type: cls
    for cls in (MarketDataEvent, OrderEvent, FillEvent, SignalEvent, SystemEvent)
}
"""The concrete event class of each event type."""

_VALID_TYPES = ", ".join(sorted(EVENT_CLASSES))
