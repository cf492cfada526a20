"""The wire codec: events to JSON bytes and back, strict and fast (DESIGN §2).

A message is one event JSON object or a JSON array of events (a batch
envelope). Decoding is one msgspec call for the whole message; only when that
fails does the codec split the envelope and decode each event on its own, so a
bad event costs only itself and the reason names what is wrong with it.

Events are written with the platform contract's field names only. On the way
in, the engine's own pre-contract shape is still read where that is
unambiguous (a fill's ``executed_qty``, an order's ``"strategy_id": null``):
on the slow path only, so a contract-shaped message pays nothing for it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import operator
import re
from collections.abc import Sequence

import msgspec

from silvertine_streams.errors import InvalidEvent
from silvertine_streams.events.enums import (
    OrderSide,
    OrderStatus,
    OrderType,
    Severity,
    SignalType,
    TimeInForce,
)
from silvertine_streams.events.model import EVENT_CLASSES, Event, EventType, EventUnion

_ENCODER = msgspec.json.Encoder()
# Sorted dict keys make the fingerprint independent of metadata key order.
_CANONICAL_ENCODER = msgspec.json.Encoder(order="deterministic")
_EVENT_DECODER = msgspec.json.Decoder(EventUnion)
_MESSAGE_DECODER = msgspec.json.Decoder(list[EventUnion] | EventUnion)
_ARRAY_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
_LENIENT_JSON = json.JSONDecoder()
_JSON_WHITESPACE = " \t\n\r"
_VALID_TYPES = ", ".join(sorted(EVENT_CLASSES))
_TAG_PATH = " - at `$.event_type`"
_ANY_JSON = msgspec.json.Decoder()
# Every enum-valued field, for reasons that list the allowed values.
_ENUM_FIELDS: dict[str, type[enum.StrEnum]] = {
    "side": OrderSide,
    "order_type": OrderType,
    "status": OrderStatus,
    "time_in_force": TimeInForce,
    "signal_type": SignalType,
    "severity": Severity,
}
_ENUM_VALUE = re.compile(r"Invalid enum value (.*) - at `\$(?:\[\d+\])?\.(\w+)`$")
# The engine's signal types before the contract. Not mapped: a "sell" may mean
# go short or only exit a long, and "hold" keep a position or go flat.
_OLD_SIGNAL_TYPES = ("'buy'", "'sell'", "'hold'")
# Fields the engine may fill at ingress; a redelivered copy differs only in these.
_INGRESS_FIELDS = ("ts_ns", "sequence")
# Per class: its tag, and a getter picking every other field out of
# msgspec.structs.astuple(). Half the cost of building and key-sorting a dict
# per event, which matters because the agents fingerprint every event.
_FINGERPRINT_PLAN = {
    cls: (
        event_type.value,
        operator.itemgetter(
            *(i for i, name in enumerate(cls.__struct_fields__) if name not in _INGRESS_FIELDS)
        ),
    )
    for event_type, cls in EVENT_CLASSES.items()
}


class Rejected(msgspec.Struct, frozen=True):
    """An event (or a whole message) that could not be accepted.

    Attributes:
        payload: the event's own bytes as received when they could be isolated
            from the envelope, else the whole message.
        reason: what is wrong, for a person.
    """

    payload: bytes
    reason: str

    @property
    def dead_letter_reason(self) -> str:
        """The DLQ reason: ``code: text``; a reject without a code of its own is ``invalid``."""
        code = self.reason.split(":", 1)[0]
        return self.reason if code in _OWN_CODES else f"invalid: {self.reason}"


_OWN_CODES = frozenset({"too_large", "too_deep", "internal"})


class DecodedMessage(msgspec.Struct):
    """The outcome of decoding one message.

    Attributes:
        events: the valid events, in message order.
        rejects: what could not be accepted, in message order.
    """

    events: list[Event]
    rejects: list[Rejected]


def encode_event(event: Event) -> bytes:
    """Encode one event as a JSON object."""
    return _ENCODER.encode(event)


def encode_batch(events: Sequence[Event]) -> bytes:
    """Encode events as a JSON array: a batch envelope."""
    if type(events) is not list and type(events) is not tuple:
        events = list(events)
    return _ENCODER.encode(events)


def decode_event(data: bytes) -> Event:
    """Decode and validate exactly one event JSON object.

    Raises:
        InvalidEvent: ``data`` is not one valid event; ``reason`` says why and
            ``payload`` holds ``data``.
    """
    try:
        return _decode_one(data)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(_describe(exc, data), bytes(data)) from exc


MAX_EVENT_BYTES = 64 * 1024
"""Default bound of one event's JSON (``SILVERTINE_MAX_EVENT_BYTES``)."""
MAX_MESSAGE_BYTES = 1024 * 1024
"""Default bound of one message or envelope (``SILVERTINE_MAX_MESSAGE_BYTES``)."""
PREVIEW_BYTES = 1024
"""How much of an oversize payload a dead letter keeps (so the DLQ copy always fits)."""


def decode_message(data: bytes, expected_type: EventType | None = None, *,
                   max_event_bytes: int = MAX_EVENT_BYTES,
                   max_message_bytes: int = MAX_MESSAGE_BYTES) -> DecodedMessage:
    """Decode a message holding one event or a batch envelope of events.

    Args:
        data: the message value as received.
        expected_type: if given, events of any other type are rejected.
        max_event_bytes: an event's JSON longer than this is rejected as ``too_large``.
        max_message_bytes: a message longer than this is rejected whole as ``too_large``.

    Returns:
        The valid events and the rejects, each in message order; an envelope
        with a bad event loses only that event. Never raises, whatever ``data``
        holds (too big, too deep, not UTF-8, not JSON): what cannot be decoded
        is a reject with a reason (``internal:`` for what we did not foresee).
    """
    if len(data) > max_message_bytes:
        return DecodedMessage(events=[], rejects=[too_large(data, "message", max_message_bytes)])
    try:
        decoded = _decode_checked(data, expected_type, max_event_bytes)
    except RecursionError:
        # msgspec raises it (not DecodeError) on JSON nested ~1,000 levels deep.
        return DecodedMessage(events=[], rejects=[Rejected(
            bytes(data), "too_deep: the JSON is nested too deeply to be an event")])
    except Exception as exc:  # noqa: BLE001 - no message may stop or bypass the pipeline
        return DecodedMessage(events=[], rejects=[Rejected(
            _bounded(data), f"internal: {type(exc).__name__} while decoding: {exc}"[:500])])
    return decoded


def too_large(data: bytes, what: str, limit: int) -> Rejected:
    """A reject for an oversize payload: its size and digest, and a bounded preview."""
    digest = hashlib.sha256(data).hexdigest()
    return Rejected(_bounded(data), f"too_large: {what} of {len(data)} bytes is over the "
                                    f"{limit}-byte limit (sha256 {digest}; payload shortened)")


def _bounded(data: bytes) -> bytes:
    return bytes(data[:PREVIEW_BYTES])


def _decode_checked(data: bytes, expected_type: EventType | None,
                    max_event_bytes: int) -> DecodedMessage:
    """Decode ``data`` (under the message bound), rejecting events over ``max_event_bytes``."""
    if len(data) > max_event_bytes:
        # Only a message this long can hold an event this long: check each event.
        return _decode_each(data, expected_type, max_event_bytes)
    try:
        decoded = _MESSAGE_DECODER.decode(data)
    except msgspec.DecodeError:
        return _decode_each(data, expected_type, max_event_bytes)
    enveloped = type(decoded) is list
    events: list[Event] = decoded if enveloped else [decoded]
    # One C-level pass over the types; the per-event split only when it fails.
    if (
        expected_type is not None
        and events
        and set(map(type, events)) != {EVENT_CLASSES[EventType(expected_type)]}
    ):
        return _split_by_type(data, enveloped, events, EventType(expected_type))
    return DecodedMessage(events=events, rejects=[])


def content_fingerprint(event: Event) -> str:
    """Return 16 hex characters identifying the event's content.

    ``ts_ns`` and ``sequence`` are left out because the engine may fill them
    at ingress: a redelivered copy of an event has the same fingerprint, while
    an event reusing an id with other content (price, quantity, ...) does not.
    The digest covers the event type and every other field's value in field
    order, with metadata keys sorted.
    """
    tag, pick_content = _FINGERPRINT_PLAN[type(event)]
    encoded = _CANONICAL_ENCODER.encode((tag, pick_content(msgspec.structs.astuple(event))))
    return hashlib.blake2b(encoded, digest_size=8).hexdigest()


def _decode_each(data: bytes, expected_type: EventType | None,
                 max_event_bytes: int = MAX_EVENT_BYTES) -> DecodedMessage:
    """Slow path: isolate each event of the message and decode it on its own."""
    pieces: list[bytes | msgspec.Raw]
    top_level = False
    try:
        pieces = list(_ARRAY_DECODER.decode(data))
    except msgspec.DecodeError as exc:
        if bytes(data).lstrip()[:1] == b"[":
            split = _split_envelope_leniently(data)
            if split is None:
                # The envelope itself is broken: no event in it can be trusted.
                reason = _describe(exc, data, envelope_allowed=True)
                return DecodedMessage(events=[], rejects=[Rejected(bytes(data), reason)])
            pieces = list(split)
        else:
            pieces = [data]  # not an array: one event, or nothing usable
            top_level = True
    result = DecodedMessage(events=[], rejects=[])
    for piece in pieces:
        if len(piece) > max_event_bytes:
            result.rejects.append(too_large(bytes(piece), "event", max_event_bytes))
            continue
        try:
            event = _decode_one(piece)
        except msgspec.DecodeError as exc:
            reason = _describe(exc, piece, envelope_allowed=top_level)
            result.rejects.append(Rejected(payload=bytes(piece), reason=reason))
            continue
        if expected_type is not None and event.event_type != expected_type:
            reason = _wrong_type(event, EventType(expected_type))
            result.rejects.append(Rejected(payload=bytes(piece), reason=reason))
        else:
            result.events.append(event)
    return result


def _decode_one(data: bytes | msgspec.Raw) -> Event:
    """Decode one event, in the contract's shape or else the engine's older one.

    Raises:
        msgspec.DecodeError: ``data`` is not one valid event.
    """
    try:
        return _EVENT_DECODER.decode(data)  # type: ignore[no-any-return]  # a concrete event
    except msgspec.DecodeError:
        event = _decode_pre_contract(data)
        if event is None:
            raise
        return event


def _decode_pre_contract(data: bytes | msgspec.Raw) -> Event | None:
    """Decode an event written in the engine's pre-contract shape, or return None.

    Before the platform contract, a fill's quantity was ``executed_qty`` and an
    order without a strategy had ``"strategy_id": null``; canonical logs and
    producers may still hold such events. Only these renames are made, only
    when they are unambiguous, and the result is decoded by the same strict
    decoder as any event.

    Raises:
        msgspec.DecodeError: the renamed event is invalid (the reason names why).
    """
    raw = bytes(data)
    if b'"executed_qty"' not in raw and b'"strategy_id"' not in raw:
        return None
    try:
        body = _ANY_JSON.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    if type(body) is not dict:
        return None
    event_type = body.get("event_type")
    renamed = False
    if event_type == "fill" and "executed_qty" in body and "executed_quantity" not in body:
        body["executed_quantity"] = body.pop("executed_qty")
        renamed = True
    if event_type == "order" and "strategy_id" in body and body["strategy_id"] is None:
        body["strategy_id"] = ""
        renamed = True
    if not renamed:
        return None
    return _EVENT_DECODER.decode(_ENCODER.encode(body))  # type: ignore[no-any-return]  # an event


def _split_by_type(
    data: bytes, enveloped: bool, events: list[Event], expected_type: EventType
) -> DecodedMessage:
    """Reject the decoded events of another type, each with its own bytes."""
    # The message decoded as a whole, so it is valid JSON: splitting cannot fail.
    payloads = _ARRAY_DECODER.decode(data) if enveloped else [data]
    result = DecodedMessage(events=[], rejects=[])
    for event, payload in zip(events, payloads, strict=True):
        if event.event_type is expected_type:
            result.events.append(event)
        else:
            reason = _wrong_type(event, expected_type)
            result.rejects.append(Rejected(payload=bytes(payload), reason=reason))
    return result


def _wrong_type(event: Event, expected_type: EventType) -> str:
    return (
        f"event_type {event.event_type.value!r} does not belong here: "
        f"expected {expected_type.value!r} events only"
    )


def _split_envelope_leniently(data: bytes) -> list[bytes] | None:
    """Isolate the items of an array msgspec refused, or None if that is unsafe.

    msgspec refuses a whole array when one item holds ``NaN`` or ``Infinity``
    (Python's ``json.dumps`` writes them). Python's parser accepts those, so it
    can still find where each item starts and ends; each item is then judged
    on its own. Any other damage to the array's structure returns None.
    """
    try:
        text = bytes(data).decode()
    except UnicodeDecodeError:
        return None
    items: list[bytes] = []
    position = _skip_whitespace(text, _skip_whitespace(text, 0) + 1)  # past "["
    while True:
        try:
            _, end = _LENIENT_JSON.raw_decode(text, position)
        except (ValueError, RecursionError):
            return None
        items.append(text[position:end].encode())
        position = _skip_whitespace(text, end)
        if text.startswith(",", position):
            position = _skip_whitespace(text, position + 1)
        elif text.startswith("]", position) and _skip_whitespace(text, position + 1) == len(text):
            return items
        else:
            return None


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in _JSON_WHITESPACE:
        position += 1
    return position


def _describe(
    exc: msgspec.DecodeError, data: bytes | msgspec.Raw, *, envelope_allowed: bool = False
) -> str:
    """Turn a msgspec error into a reason a person can act on."""
    reason = str(exc)
    if not bytes(data).strip():
        return "Empty message: expected an event JSON object"
    if reason == "Input data was truncated":
        return "JSON is malformed: input data was truncated"
    if reason.startswith("JSON is malformed: invalid character (byte "):
        return reason + _non_json_number_hint(reason, bytes(data))
    if reason.endswith(_TAG_PATH) and reason.startswith("Invalid value "):
        value = reason[len("Invalid value ") : -len(_TAG_PATH)]
        return f"Unknown event_type {value}; valid types: {_VALID_TYPES}{_TAG_PATH}"
    if "event_type`" in reason:
        return f"{reason}; valid types: {_VALID_TYPES}"
    enum_value = _ENUM_VALUE.match(reason)
    if enum_value is not None and enum_value[2] in _ENUM_FIELDS:
        allowed = ", ".join(_ENUM_FIELDS[enum_value[2]])
        hint = ""
        if enum_value[2] == "signal_type" and enum_value[1] in _OLD_SIGNAL_TYPES:
            hint = " (the old buy, sell and hold are not translated: a sell may mean short or exit)"
        return f"{reason}; valid values: {allowed}{hint}"
    if reason.startswith("Number out of range"):
        return reason.replace("Number out of range", "Number out of range (not a finite float)", 1)
    if reason.startswith("Expected `object`, got ") and " - at " not in reason:
        wanted = "an event object or an array of events" if envelope_allowed else "an event object"
        return f"Expected {wanted}, got {reason[len('Expected `object`, got ') :]}"
    return reason


def _non_json_number_hint(reason: str, data: bytes) -> str:
    """Explain the usual cause when the offending character starts NaN or Infinity."""
    offset = int(reason.rsplit(" ", 1)[-1].rstrip(")"))
    word = data[offset : offset + 8]
    if word.startswith(b"NaN") or word == b"Infinity":
        return ": NaN and Infinity are not JSON numbers; numbers must be finite"
    return ""
