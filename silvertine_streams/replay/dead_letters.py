"""Reading the dead-letter stream ``dlq``: entries, by reason, oldest or newest first."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from silvertine_streams.replay.reader import entry_datetime, raw_client
from silvertine_streams.sinks.dead_letters import payload_event_id
from silvertine_streams.topics import DLQ_STREAM, EVENT_TYPES

PAGE = 1000
"""Entries read per XRANGE call."""


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One entry of ``dlq``.

    Attributes:
        entry_id: the stream entry id (its ms is when the letter was written).
        payload: the bytes as received.
        reason: ``code: text``.
        origin: where it was read (``silvertine.<type>/<p>/<offset>`` or ``events:<type>/<id>``).
    """

    entry_id: str
    payload: bytes
    reason: str
    origin: str

    @property
    def at(self) -> datetime:
        """When the letter was written."""
        return entry_datetime(self.entry_id)

    @property
    def code(self) -> str:
        """The reason's code, e.g. ``invalid`` or ``id_conflict``."""
        return self.reason.split(":", 1)[0].strip()

    @property
    def event_id(self) -> str | None:
        """The payload's ``event_id``, if it has one."""
        return payload_event_id(self.payload)

    @property
    def event_type(self) -> str | None:
        """The payload's ``event_type`` when it is one the engine knows, else None."""
        found = _payload_field(self.payload, "event_type")
        return found if isinstance(found, str) and found in EVENT_TYPES else None


def reason_matches(reason: str, wanted: str | None) -> bool:
    """Tell whether ``reason`` has the code ``wanted`` or contains it (case-insensitive)."""
    if not wanted:
        return True
    wanted = wanted.strip().lower()
    text = reason.lower()
    return text.split(":", 1)[0].strip() == wanted or wanted in text


async def iter_dead_letters(
    redis: Redis, start: str = "-", end: str = "+", *, newest_first: bool = False,
    page: int = PAGE,
) -> AsyncIterator[DeadLetterEntry]:
    """Yield the entries of ``dlq`` between two ids (inclusive), in either order."""
    raw = raw_client(redis)
    low, high = start, end
    while True:
        if newest_first:
            reply = await raw.execute_command("XREVRANGE", DLQ_STREAM, high, low, "COUNT", page)
        else:
            reply = await raw.execute_command("XRANGE", DLQ_STREAM, low, high, "COUNT", page)
        if not reply:
            return
        for entry_id, fields in reply:
            yield parse_entry(entry_id, fields)
        if len(reply) < page:
            return
        last = text(reply[-1][0])
        if newest_first:
            preceding = _preceding_id(last)
            if preceding is None:
                return
            high = preceding
        else:
            ms, _, seq = last.partition("-")
            low = f"{ms}-{int(seq) + 1}"


async def list_dead_letters(
    redis: Redis, reason: str | None = None, limit: int | None = None,
) -> list[DeadLetterEntry]:
    """Return dead letters matching ``reason``, newest first, at most ``limit``."""
    found: list[DeadLetterEntry] = []
    async for entry in iter_dead_letters(redis, newest_first=True):
        if reason_matches(entry.reason, reason):
            found.append(entry)
            if limit is not None and len(found) >= limit:
                break
    return found


async def reason_counts(redis: Redis) -> dict[str, int]:
    """Return how many dead letters there are per reason code."""
    counts: dict[str, int] = {}
    async for entry in iter_dead_letters(redis):
        counts[entry.code] = counts.get(entry.code, 0) + 1
    return counts


def parse_entry(entry_id: bytes | str, fields: list[Any]) -> DeadLetterEntry:
    """Build an entry from a raw XRANGE item (``id``, ``[field, value, ...]``)."""
    values = {text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
    payload = values.get("payload", b"")
    return DeadLetterEntry(
        entry_id=text(entry_id),
        payload=payload.encode() if isinstance(payload, str) else payload,
        reason=text(values.get("reason", b"")),
        origin=text(values.get("origin", b"")),
    )


def _payload_field(payload: bytes, name: str) -> Any:
    try:
        decoded = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return decoded.get(name) if isinstance(decoded, dict) else None


def _preceding_id(entry_id: str) -> str | None:
    ms, _, seq = entry_id.partition("-")
    if int(seq) > 0:
        return f"{ms}-{int(seq) - 1}"
    if int(ms) > 0:
        return f"{int(ms) - 1}-18446744073709551615"
    return None


def text(value: bytes | str) -> str:
    """Decode a Redis reply value (bytes) for people; str passes through."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
