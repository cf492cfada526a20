"""The public event model: five frozen msgspec Structs in one tagged union.

Every event validates itself in ``__post_init__``. msgspec runs that hook both
when a caller constructs an event and when it decodes one, so a rule written
here holds on every path (a ``ValueError`` raised on decode surfaces as
``msgspec.ValidationError``). The checks are written as one cheap expression
per field with the full, message-producing check behind it, because decoding
sits on the engine's hot path (DESIGN §5: per-event work must stay cheap).
"""

from __future__ import annotations

import enum
import math
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self, TypeAlias

import msgspec

_INF = math.inf
_EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_CLOCK_LEAD = timedelta(days=1)
# Sequences and ingest times travel to Java/Go consumers and Redis: keep them int64.
_INT64_MAX = 2**63 - 1
_SYMBOL_MAX = 64
_ID_MAX = 128


class EventType(enum.StrEnum):
    """The kind of an event; also its ``event_type`` tag on the wire."""

    MARKET_DATA = "market_data"
    ORDER = "order"
    FILL = "fill"
    SIGNAL = "signal"
    SYSTEM = "system"


class EventPriority(enum.IntEnum):
    """Handling priority of an event type; lower is more urgent."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


class OrderSide(enum.StrEnum):
    """Direction of an order or fill."""

    BUY = "buy"
    SELL = "sell"


class OrderType(enum.StrEnum):
    """How an order is priced."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class OrderStatus(enum.StrEnum):
    """Where an order is in its lifecycle."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class SignalType(enum.StrEnum):
    """What a strategy recommends."""

    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"


class TimeInForce(enum.StrEnum):
    """How long an order stays working."""

    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class Severity(enum.StrEnum):
    """How serious a system event is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


def _new_id() -> str:
    return str(uuid.uuid4())


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        timestamp: when the event happened, timezone-aware UTC.
        source: who produced it (feed, broker, strategy, engine).
        metadata: free-form JSON-ready extras.
        sequence: per ``source``/symbol sequence number, if the producer keeps one.
        ts_ns: ingest time in nanoseconds since the epoch.
    """

    event_type: ClassVar[EventType]
    priority: ClassVar[EventPriority]

    event_id: str = msgspec.field(default_factory=_new_id)
    timestamp: datetime = msgspec.field(default_factory=_utc_now)
    source: str = "unknown"
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
        """Return the event as JSON-ready builtins, including ``event_type``."""
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]  # always a dict

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build and validate an event from a mapping such as ``to_dict()`` returns.

        On ``Event`` the ``event_type`` key picks the type; on a subclass the key
        may be left out. Enum members or their values and ``datetime`` objects
        or ISO-8601 strings are accepted.

        Raises:
            ValueError: the mapping does not describe a valid event.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping, got {type(data).__name__}")
        fields = dict(data)
        tag = fields.get("event_type")
        if isinstance(tag, EventType):
            fields["event_type"] = tag = tag.value
        target: Any
        if cls is Event:
            if not isinstance(tag, str) or tag not in EVENT_CLASSES:
                raise ValueError(f"unknown event_type {tag!r}; valid types: {_VALID_TYPES}")
            target = EventUnion
        else:
            if tag is not None and tag != cls.event_type:
                raise ValueError(f"expected event_type {cls.event_type.value!r}, got {tag!r}")
            target = cls
        try:
            event = msgspec.convert(fields, target)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from exc
        return event  # type: ignore[no-any-return]  # convert returns the target type

    def with_changes(self, **changes: Any) -> Self:
        """Return a validated copy with ``changes`` applied.

        Raises:
            ValueError: the copy breaks a rule.
            TypeError: a name in ``changes`` is not a field.
        """
        return msgspec.structs.replace(self, **changes)  # replace runs __post_init__


# --- validation -------------------------------------------------------------
# Each rule is a fast inline test; only when it fails does a _settle_* helper
# work out whether the value is acceptable after all (an int where a float is
# expected, a string where an enum is) and, if not, raise the precise message.


class _FutureLimit:
    """The latest plausible timestamp, refreshed only when a value exceeds it.

    The limit only grows with the clock, so a stale value errs towards a
    re-check, never towards accepting: no clock call on the hot path.
    """

    value: datetime = _utc_now() + _MAX_CLOCK_LEAD


def _check_common(event: Event) -> None:
    # Inlined text checks: a call per field would cost a tenth of the budget.
    event_id = event.event_id
    if not (type(event_id) is str and 0 < len(event_id) <= _ID_MAX and event_id.isprintable()):
        _check_text(event_id, "Event ID", _ID_MAX)
    source = event.source
    if not (type(source) is str and 0 < len(source) <= _ID_MAX and source.isprintable()):
        _check_text(source, "Source", _ID_MAX)
    stamp = event.timestamp
    if not (
        type(stamp) is datetime
        and stamp.tzinfo is UTC
        and _EARLIEST_TIMESTAMP <= stamp <= _FutureLimit.value
    ):
        _settle_timestamp(stamp)
    metadata = event.metadata
    if type(metadata) is not dict or metadata:
        _check_json_object(metadata, "metadata")
    sequence = event.sequence
    if sequence is not None and not (type(sequence) is int and 0 <= sequence <= _INT64_MAX):
        _settle_int(sequence, "sequence", 0)
    ts_ns = event.ts_ns
    if not (type(ts_ns) is int and 0 < ts_ns <= _INT64_MAX):
        _settle_int(ts_ns, "ts_ns", 1)


def _check_text(value: object, label: str, max_len: int) -> None:
    if type(value) is str and 0 < len(value) <= max_len and value.isprintable():
        return
    if not isinstance(value, str):
        raise ValueError(f"{label} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{label} cannot be empty")
    if len(value) > max_len:
        raise ValueError(f"{label} is too long: {len(value)} characters, at most {max_len}")
    raise ValueError(f"{label} contains control or non-printable characters: {value!r}")


def _check_symbol(value: object, label: str = "Symbol") -> None:
    # Symbols are Kafka keys: "AAPL " and "AAPL" would split one stream in two.
    if type(value) is str and value and value[0] != " " and value[-1] != " ":
        _check_text(value, label, _SYMBOL_MAX)
        return
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{label} cannot be empty")
    _check_text(value, label, _SYMBOL_MAX)
    raise ValueError(f"{label} must not start or end with whitespace: {value!r}")


def _settle_timestamp(stamp: object) -> None:
    if not isinstance(stamp, datetime):
        raise ValueError(f"Timestamp must be a datetime, got {type(stamp).__name__}")
    offset = stamp.utcoffset()
    if offset is None or offset:
        raise ValueError("Timestamp must be timezone-aware UTC")
    _FutureLimit.value = _utc_now() + _MAX_CLOCK_LEAD
    if not _EARLIEST_TIMESTAMP <= stamp <= _FutureLimit.value:
        raise ValueError(
            f"Timestamp {stamp.isoformat()} is implausible: "
            "must be after 2000-01-01 and at most 1 day in the future"
        )


def _settle_int(value: object, name: str, minimum: int) -> None:
    if type(value) is bool or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= value <= _INT64_MAX:
        raise ValueError(f"{name} must be between {minimum} and 2**63-1, got {value}")


def _positive(value: float) -> bool:
    return value > 0.0


def _non_negative(value: float) -> bool:
    return value >= 0.0


def _unit_interval(value: float) -> bool:
    return -1.0 <= value <= 1.0


def _settle_number(
    event: Event, name: str, message: str, in_range: Callable[[float], bool]
) -> None:
    """Accept ``event.<name>`` after coercion to ``float`` or raise the precise error."""
    value = getattr(event, name)
    if type(value) is bool or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = _INF
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number")
    if not in_range(number):
        raise ValueError(message)
    if type(value) is not float:
        # Store ints as floats so encoding, equality and fingerprints agree with
        # what a decoder would produce from the same JSON.
        msgspec.structs.force_setattr(event, name, number)


def _settle_enum(event: Event, name: str, kind: type[enum.StrEnum]) -> None:
    value = getattr(event, name)
    try:
        msgspec.structs.force_setattr(event, name, kind(value))
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


def _check_json_object(value: object, name: str) -> None:
    if type(value) is not dict:
        raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
    problem = _json_problem(value)
    if problem is not None:
        raise ValueError(f"{name}{problem}")


def _json_problem(value: object) -> str | None:
    """Say what keeps ``value`` from encoding to JSON and back unchanged, or None."""
    if value is None or type(value) is str or type(value) is bool or type(value) is int:
        return None
    if type(value) is float:
        return None if math.isfinite(value) else " must hold only finite numbers"
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f" keys must be strings, got {key!r}"
            problem = _json_problem(item)
            if problem is not None:
                return f".{key}{problem}"
        return None
    if type(value) is list:
        for index, item in enumerate(value):
            problem = _json_problem(item)
            if problem is not None:
                return f"[{index}]{problem}"
        return None
    return f" holds a {type(value).__name__}, which has no JSON form"


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

    symbol: str
    price: float
    volume: float = 0.0
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None

    def __post_init__(self) -> None:
        # The hottest path in the engine: _check_symbol inlined.
        symbol = self.symbol
        if not (
            type(symbol) is str
            and 0 < len(symbol) <= _SYMBOL_MAX
            and symbol[0] != " "
            and symbol[-1] != " "
            and symbol.isprintable()
        ):
            _check_symbol(symbol)
        price = self.price
        if not (type(price) is float and 0.0 < price < _INF):
            _settle_number(self, "price", "Price must be positive", _positive)
        volume = self.volume
        if not (type(volume) is float and 0.0 <= volume < _INF):
            _settle_number(self, "volume", "Volume cannot be negative", _non_negative)
        bid, ask = self.bid, self.ask
        if bid is not None and not (type(bid) is float and 0.0 < bid < _INF):
            _settle_number(self, "bid", "Bid must be positive", _positive)
        if ask is not None and not (type(ask) is float and 0.0 < ask < _INF):
            _settle_number(self, "ask", "Ask must be positive", _positive)
        if self.bid is not None and self.ask is not None and self.bid > self.ask:
            raise ValueError("Bid cannot exceed ask")
        size = self.bid_size
        if size is not None and not (type(size) is float and 0.0 <= size < _INF):
            _settle_number(self, "bid_size", "Bid size cannot be negative", _non_negative)
        size = self.ask_size
        if size is not None and not (type(size) is float and 0.0 <= size < _INF):
            _settle_number(self, "ask_size", "Ask size cannot be negative", _non_negative)
        _check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol."""
        return self.symbol


class OrderEvent(Event, tag="order", frozen=True, kw_only=True):
    """An order, or a change in its status.

    Attributes:
        order_id: the order's id, stable across its lifecycle.
        symbol: instrument; also the partition key.
        side: buy or sell.
        quantity: ordered quantity, positive.
        order_type: market, limit, stop or stop_limit.
        price: limit price; required for limit and stop_limit orders.
        stop_price: trigger price; required for stop and stop_limit orders.
        status: lifecycle status.
        strategy_id: the strategy that placed it, if any.
        time_in_force: how long the order works.
    """

    event_type: ClassVar[EventType] = EventType.ORDER
    priority: ClassVar[EventPriority] = EventPriority.CRITICAL

    order_id: str
    symbol: str
    side: OrderSide
    quantity: float
    order_type: OrderType = OrderType.MARKET
    price: float | None = None
    stop_price: float | None = None
    status: OrderStatus = OrderStatus.PENDING
    strategy_id: str | None = None
    time_in_force: TimeInForce = TimeInForce.DAY

    def __post_init__(self) -> None:
        _check_text(self.order_id, "Order ID", _ID_MAX)
        _check_symbol(self.symbol)
        if type(self.side) is not OrderSide:
            _settle_enum(self, "side", OrderSide)
        quantity = self.quantity
        if not (type(quantity) is float and 0.0 < quantity < _INF):
            _settle_number(self, "quantity", "Quantity must be positive", _positive)
        if type(self.order_type) is not OrderType:
            _settle_enum(self, "order_type", OrderType)
        order_type = self.order_type
        price = self.price
        if price is None:
            if order_type is OrderType.LIMIT or order_type is OrderType.STOP_LIMIT:
                raise ValueError(f"{order_type.value} orders require price")
        elif not (type(price) is float and 0.0 < price < _INF):
            _settle_number(self, "price", "Price must be positive", _positive)
        stop_price = self.stop_price
        if stop_price is None:
            if order_type is OrderType.STOP or order_type is OrderType.STOP_LIMIT:
                raise ValueError(f"{order_type.value} orders require stop price")
        elif not (type(stop_price) is float and 0.0 < stop_price < _INF):
            _settle_number(self, "stop_price", "Stop price must be positive", _positive)
        if type(self.status) is not OrderStatus:
            _settle_enum(self, "status", OrderStatus)
        if self.strategy_id is not None:
            _check_text(self.strategy_id, "Strategy ID", _ID_MAX)
        if type(self.time_in_force) is not TimeInForce:
            _settle_enum(self, "time_in_force", TimeInForce)
        _check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol."""
        return self.symbol


class FillEvent(Event, tag="fill", frozen=True, kw_only=True):
    """An execution against an order.

    Attributes:
        fill_id: the execution's id (a UUID4 string unless the broker set one).
        order_id: the order it fills.
        symbol: instrument; also the partition key.
        side: buy or sell.
        executed_qty: quantity executed, positive.
        executed_price: execution price, positive.
        commission: fees charged, non-negative.
    """

    event_type: ClassVar[EventType] = EventType.FILL
    priority: ClassVar[EventPriority] = EventPriority.CRITICAL

    fill_id: str = msgspec.field(default_factory=_new_id)
    order_id: str
    symbol: str
    side: OrderSide
    executed_qty: float
    executed_price: float
    commission: float = 0.0

    def __post_init__(self) -> None:
        _check_text(self.fill_id, "Fill ID", _ID_MAX)
        _check_text(self.order_id, "Order ID", _ID_MAX)
        _check_symbol(self.symbol)
        if type(self.side) is not OrderSide:
            _settle_enum(self, "side", OrderSide)
        qty = self.executed_qty
        if not (type(qty) is float and 0.0 < qty < _INF):
            _settle_number(self, "executed_qty", "Executed quantity must be positive", _positive)
        price = self.executed_price
        if not (type(price) is float and 0.0 < price < _INF):
            _settle_number(self, "executed_price", "Executed price must be positive", _positive)
        commission = self.commission
        if not (type(commission) is float and 0.0 <= commission < _INF):
            _settle_number(self, "commission", "Commission cannot be negative", _non_negative)
        _check_common(self)

    @property
    def partition_key(self) -> str:
        """The symbol."""
        return self.symbol


class SignalEvent(Event, tag="signal", frozen=True, kw_only=True):
    """A strategy's recommendation for one symbol.

    Attributes:
        symbol: instrument; also the partition key.
        strategy_id: the strategy that emitted it.
        signal_type: buy, sell or hold.
        strength: conviction in [-1.0, 1.0].
        target_price: price the strategy aims for, if any; positive.
    """

    event_type: ClassVar[EventType] = EventType.SIGNAL
    priority: ClassVar[EventPriority] = EventPriority.HIGH

    symbol: str
    strategy_id: str
    signal_type: SignalType
    strength: float
    target_price: float | None = None

    def __post_init__(self) -> None:
        _check_symbol(self.symbol)
        _check_text(self.strategy_id, "Strategy ID", _ID_MAX)
        if type(self.signal_type) is not SignalType:
            _settle_enum(self, "signal_type", SignalType)
        strength = self.strength
        if not (type(strength) is float and -1.0 <= strength <= 1.0):
            _settle_number(
                self, "strength", "Signal strength must be between -1.0 and 1.0", _unit_interval
            )
        target = self.target_price
        if target is not None and not (type(target) is float and 0.0 < target < _INF):
            _settle_number(self, "target_price", "Target price must be positive", _positive)
        _check_common(self)

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

    kind: str
    severity: Severity = Severity.INFO
    message: str = ""
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    symbol: str = ""

    def __post_init__(self) -> None:
        _check_text(self.kind, "Kind", _SYMBOL_MAX)
        if type(self.severity) is not Severity:
            _settle_enum(self, "severity", Severity)
        if type(self.message) is not str:
            raise ValueError(f"message must be a string, got {type(self.message).__name__}")
        details = self.details
        if type(details) is not dict or details:
            _check_json_object(details, "details")
        if self.symbol != "":
            _check_symbol(self.symbol)
        _check_common(self)

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
