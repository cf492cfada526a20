"""The validation rules the event types run in ``__post_init__``.

Each rule is a fast inline test in :mod:`.model`; only when it fails does a
``settle_*`` function here work out whether the value is acceptable after all
(an int where a float is expected, a string where an enum is) and, if not,
raise the precise message. The ``check_*`` functions hold rules shared by
several event types. Internal to :mod:`silvertine_streams.events`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from silvertine_streams.events.model import Event

INF = math.inf
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)
MAX_CLOCK_LEAD = timedelta(days=1)
# Sequences and ingest times travel to Java/Go consumers and Redis: keep them int64.
INT64_MAX = 2**63 - 1
SYMBOL_MAX = 64
ID_MAX = 128


class FutureLimit:
    """The latest plausible timestamp, refreshed only when a value exceeds it.

    The limit only grows with the clock, so a stale value errs towards a
    re-check, never towards accepting: no clock call on the hot path.
    """

    value: datetime = datetime.now(UTC) + MAX_CLOCK_LEAD


def check_common(event: Event) -> None:
    """Check the fields every event has; raise ``ValueError`` naming the broken rule."""
    # Inlined text checks: a call per field would cost a tenth of the budget.
    event_id = event.event_id
    if not (type(event_id) is str and 0 < len(event_id) <= ID_MAX and event_id.isprintable()):
        check_text(event_id, "Event ID", ID_MAX)
    source = event.source
    if not (type(source) is str and len(source) <= ID_MAX and source.isprintable()):
        check_optional_text(source, "Source", ID_MAX)
    stamp = event.timestamp
    if not (
        type(stamp) is datetime
        and stamp.tzinfo is UTC
        and EARLIEST_TIMESTAMP <= stamp <= FutureLimit.value
    ):
        settle_timestamp(stamp)
    metadata = event.metadata
    if type(metadata) is not dict or metadata:
        check_json_object(metadata, "metadata")
    sequence = event.sequence
    if sequence is not None and not (type(sequence) is int and 0 <= sequence <= INT64_MAX):
        settle_int(sequence, "sequence", 0)
    ts_ns = event.ts_ns
    if not (type(ts_ns) is int and 0 < ts_ns <= INT64_MAX):
        settle_int(ts_ns, "ts_ns", 1)


def check_text(value: object, label: str, max_len: int) -> None:
    """Require a non-empty printable string of at most ``max_len`` characters."""
    if type(value) is str and 0 < len(value) <= max_len and value.isprintable():
        return
    if not isinstance(value, str):
        raise ValueError(f"{label} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{label} cannot be empty")
    if len(value) > max_len:
        raise ValueError(f"{label} is too long: {len(value)} characters, at most {max_len}")
    raise ValueError(f"{label} contains control or non-printable characters: {value!r}")


def check_optional_text(value: object, label: str, max_len: int) -> None:
    """Require ``""`` (not given) or what :func:`check_text` requires."""
    if value == "" and type(value) is str:
        return
    check_text(value, label, max_len)


def check_symbol(value: object, label: str = "Symbol") -> None:
    """Require a symbol: :func:`check_text` and no whitespace at either end."""
    # Symbols are Kafka keys: "AAPL " and "AAPL" would split one stream in two.
    if type(value) is str and value and value[0] != " " and value[-1] != " ":
        check_text(value, label, SYMBOL_MAX)
        return
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{label} cannot be empty")
    check_text(value, label, SYMBOL_MAX)
    raise ValueError(f"{label} must not start or end with whitespace: {value!r}")


def settle_timestamp(stamp: object) -> None:
    """Accept a UTC ``datetime`` between 2000 and a day ahead, or raise the precise error."""
    if not isinstance(stamp, datetime):
        raise ValueError(f"Timestamp must be a datetime, got {type(stamp).__name__}")
    offset = stamp.utcoffset()
    if offset is None or offset:
        raise ValueError("Timestamp must be timezone-aware UTC")
    FutureLimit.value = datetime.now(UTC) + MAX_CLOCK_LEAD
    if not EARLIEST_TIMESTAMP <= stamp <= FutureLimit.value:
        raise ValueError(
            f"Timestamp {stamp.isoformat()} is implausible: "
            "must be after 2000-01-01 and at most 1 day in the future"
        )


def settle_int(value: object, name: str, minimum: int) -> None:
    """Accept an int (not a bool) in ``[minimum, 2**63-1]``, or raise the precise error."""
    if type(value) is bool or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__}")
    if not minimum <= value <= INT64_MAX:
        raise ValueError(f"{name} must be between {minimum} and 2**63-1, got {value}")


def positive(value: float) -> bool:
    """Tell whether ``value`` > 0 (a range for :func:`settle_number`)."""
    return value > 0.0


def non_negative(value: float) -> bool:
    """Tell whether ``value`` >= 0 (a range for :func:`settle_number`)."""
    return value >= 0.0


def unit_interval(value: float) -> bool:
    """Tell whether ``value`` lies in [-1, 1] (a range for :func:`settle_number`)."""
    return -1.0 <= value <= 1.0


def settle_number(
    event: Event, name: str, message: str, in_range: Callable[[float], bool]
) -> None:
    """Accept ``event.<name>`` after coercion to ``float`` or raise the precise error."""
    value = getattr(event, name)
    if type(value) is bool or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = INF
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number")
    if not in_range(number):
        raise ValueError(message)
    if type(value) is not float:
        # Store ints as floats so encoding, equality and fingerprints agree with
        # what a decoder would produce from the same JSON.
        msgspec.structs.force_setattr(event, name, number)


def settle_enum(event: Event, name: str, kind: type[enum.StrEnum]) -> None:
    """Store ``event.<name>`` as a member of ``kind``, or raise listing the allowed values."""
    value = getattr(event, name)
    try:
        msgspec.structs.force_setattr(event, name, kind(value))
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}") from None


def check_json_object(value: object, name: str) -> None:
    """Require a dict that encodes to JSON and back unchanged."""
    if type(value) is not dict:
        raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(f"{name}{problem}")


def json_problem(value: object) -> str | None:
    """Say what keeps ``value`` from encoding to JSON and back unchanged, or None."""
    if value is None or type(value) is str or type(value) is bool or type(value) is int:
        return None
    if type(value) is float:
        return None if math.isfinite(value) else " must hold only finite numbers"
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f" keys must be strings, got {key!r}"
            problem = json_problem(item)
            if problem is not None:
                return f".{key}{problem}"
        return None
    if type(value) is list:
        for index, item in enumerate(value):
            problem = json_problem(item)
            if problem is not None:
                return f"[{index}]{problem}"
        return None
    return f" holds a {type(value).__name__}, which has no JSON form"
