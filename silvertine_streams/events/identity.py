"""Identity for events sent without one, stable across redelivery (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from silvertine_streams.events.model import Event


def fill_missing_identity(
    events: list[Event], raw: bytes, origin: str, timestamp_s: float | None
) -> list[Event]:
    """Give events sent without ``event_id`` / ``timestamp`` values that survive redelivery.

    Decoding fills a missing ``event_id`` with a fresh uuid4 and a missing
    ``timestamp`` with the decode time, so a redelivered copy would look like a
    new event (a duplicate in the log) or a changed one (an id conflict). The
    message's own coordinates do not change on redelivery: the id becomes
    ``<origin>#<index>`` and the timestamp the Kafka (or Redis entry) time.
    The check is per message: a producer sets these fields on every event of a
    message or on none.
    """
    has_id = b'"event_id"' in raw
    has_timestamp = b'"timestamp"' in raw or timestamp_s is None
    if has_id and has_timestamp:
        return events
    changes: dict[str, object] = {}
    if not has_timestamp:
        assert timestamp_s is not None
        changes["timestamp"] = datetime.fromtimestamp(timestamp_s, tz=UTC)
    filled = []
    for index, event in enumerate(events):
        if not has_id:
            changes["event_id"] = f"{origin}#{index}"
        filled.append(event.with_changes(**changes))
    return filled
