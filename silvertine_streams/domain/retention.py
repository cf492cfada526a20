"""Where to trim a canonical log: retention by age and length, never past a reader (pure).

A log entry may go when it is older than the type's retention age *or* lies
beyond its maximum length, and only when every reader is done with it: each
handler group following the log (its cursor) and each Redis consumer group
reading it (its last delivered entry and its oldest pending one). Trimming is
``XTRIM MINID <id>``, which removes the entries whose id is *below* ``<id>``,
so every bound here is expressed as such a MINID: the id of the oldest entry
to keep.

Stream ids are ``<ms>-<seq>`` strings; they compare as integer pairs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "FIRST_ID",
    "TrimPlan",
    "age_minid",
    "format_duration",
    "higher",
    "keep_after",
    "parse_duration",
    "parse_id",
    "plan_trim",
]

FIRST_ID = "0-1"
"""The lowest id an entry can have: a MINID that trims nothing."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``15m``, ``1h``, ``30d`` or ``2w`` into seconds (> 0).

    Raises:
        ValueError: not a positive number with an optional unit s, m, h, d or w.
    """
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"a positive duration such as 90s, 15m, 1h, 30d; not {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def format_duration(seconds: float) -> str:
    """Write seconds back in the largest unit that divides them (``3600`` -> ``1h``)."""
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_S[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_id(entry_id: str) -> tuple[int, int]:
    """Return a stream id as ``(ms, seq)``; ``"5"`` means ``(5, 0)``.

    Raises:
        ValueError: not a stream id.
    """
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ValueError(f"not a stream id: {entry_id!r}") from None


def keep_after(entry_id: str) -> str:
    """Return the MINID that trims ``entry_id`` and everything before it, nothing after."""
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"


def age_minid(now_ms: int, max_age_s: float) -> str:
    """Return the MINID that trims the entries older than ``max_age_s`` at ``now_ms``.

    Entry ids carry the Redis server's clock at ``XADD``: give its ``TIME`` here.
    """
    return f"{max(0, now_ms - round(max_age_s * 1000))}-0"


class TrimPlan(NamedTuple):
    """What to trim, and who held the trim back.

    Attributes:
        minid: trim the entries below this id; None: trim nothing.
        held_by: the reader whose position stopped the trim short of what
            retention asked for (None when retention got all it asked for).
    """

    minid: str | None
    held_by: str | None


def plan_trim(wanted: str | None, readers: Mapping[str, str]) -> TrimPlan:
    """Clamp the MINID retention asks for to the oldest entry any reader still needs.

    Args:
        wanted: the MINID of the age and length bounds (the higher of the two),
            or None when neither asks to trim anything.
        readers: for each reader (a handler group, a consumer group), the
            MINID it allows: the id of the oldest entry it has not finished
            (:func:`keep_after` its cursor).

    Returns:
        The MINID to trim at, never above any reader's, and the reader that
        held it back if one did.
    """
    if wanted is None:
        return TrimPlan(None, None)
    minid, held_by = wanted, None
    for reader, allowed in sorted(readers.items()):
        if parse_id(allowed) < parse_id(minid):
            minid, held_by = allowed, reader
    if parse_id(minid) <= parse_id(FIRST_ID):
        return TrimPlan(None, held_by)
    return TrimPlan(minid, held_by)


def higher(first: str | None, second: str | None) -> str | None:
    """Return the higher of two MINIDs (None: no bound), i.e. the one that trims more."""
    if first is None:
        return second
    if second is None:
        return first
    return first if parse_id(first) >= parse_id(second) else second
