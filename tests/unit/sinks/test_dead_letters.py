"""Unit tests for silvertine_streams.sinks.dead_letters: reading an id out of any payload."""

from __future__ import annotations

import pytest

from silvertine_streams.sinks.dead_letters import payload_event_id


@pytest.mark.parametrize(("payload", "expected"), [
    (b'{"event_id":"e-1","price":-1}', "e-1"),
    (b'{"price":-1}', None),
    (b"not json", None),
    (b"\xff\xfe", None),
    (b"[" * 20_000 + b"]" * 20_000, None),  # msgspec raises RecursionError on this
    (b'{"event_id":"e-2","metadata":' + b"[" * 20_000 + b"]" * 20_000 + b"}", None),
])
def test_any_payload_gives_an_id_or_none_and_never_raises(payload: bytes,
                                                          expected: str | None) -> None:
    assert payload_event_id(payload) == expected
