"""Business keys: what identifies an event in its domain, whatever its ``event_id`` (pure).

A producer that rebuilds an event on retry gives it a new uuid4, so the id alone
would log (and execute) it twice. Where the domain has its own identity, the
canonical log dedupes on that too:

* **fill**: the venue's execution id. ``trade_id`` with the ``exchange`` that
  issued it (``source`` when the exchange is not given): one execution is one
  fill, whatever event carries it.
* **order**: none. An order event is a state report; two reports with the same
  ``order_id``, ``status`` and quantities can both be real (two partial fills
  report ``partially_filled`` twice), so no key is safe.
* **market_data, signal, system**: none: equal values at another time are a new
  tick, signal or alert.
"""

from __future__ import annotations

from silvertine_streams.events import Event, FillEvent

KEY_SEPARATOR = "\x1f"
"""The unit separator: no event id can hold it, so a key never equals an id."""


def business_key(event: Event) -> str:
    """Return ``event``'s business key, or "" when its type has none (or it lacks one)."""
    if type(event) is FillEvent and event.trade_id:
        venue = event.exchange or event.source
        return f"{KEY_SEPARATOR}fill{KEY_SEPARATOR}{venue}{KEY_SEPARATOR}{event.trade_id}"
    return ""


def describe(key: str) -> str:
    """A business key for people: ``trade T-1 of venue XNAS``."""
    parts = key.split(KEY_SEPARATOR)
    if len(parts) == 4 and parts[1] == "fill":
        return f"trade {parts[3]} of venue {parts[2] or '(none)'}"
    return key.replace(KEY_SEPARATOR, "/")
