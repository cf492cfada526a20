"""What an idempotent handler hands back: Redis writes staged for the record of its call.

An idempotent handler (``bus.subscribe(..., idempotent=True)``) is called as
``handler(event, effects)``. Whatever it stages on ``effects`` is written by
the handler group *in one atomic step with the record that this handler
completed this event*. After a ``kill -9`` the group redelivers the events it
had not acknowledged; those a handler completed are skipped for it, and those
it had not completed left no staged write behind. State kept that way —
positions, an order table — is changed exactly once per logged event.

What a handler does anywhere else (publishing, calling a venue) happens at
least once; give such effects ids derived from the event (e.g.
:func:`derived_id`) so the receiver can tell a repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Protocol

__all__ = ["Completions", "Effects", "RedisArg", "derived_id"]

RedisArg = str | bytes | int | float
"""One argument of a staged Redis command."""

_NAMESPACE = uuid.UUID("6f0d2b4e-52a7-4c38-9a43-1d8f3c7b9e51")


def derived_id(event_id: str, *parts: object) -> str:
    """Return a UUID (text) determined by ``event_id`` and ``parts``.

    A handler that publishes events in answer to an event gives them ids this
    way; when a crash makes it answer the same event again, the answers carry
    the same ids and the canonical log keeps one copy of each.
    """
    return str(uuid.uuid5(_NAMESPACE, "/".join([event_id, *map(str, parts)])))


class Effects:
    """Redis commands an idempotent handler stages during one call.

    The group runs them after the handler returned, atomically with the record
    of the call, in the order they were staged. Nothing is written when the
    handler raises or times out (the call still counts as completed, as any
    failed call does: handlers are not retried). A command Redis refuses (a
    wrong type) counts as the handler's failure; Redis does not roll back the
    commands before it.

    Under ``silvertine replay --to handlers`` nothing staged is written: a
    replay must not change live state.
    """

    __slots__ = ("commands",)

    def __init__(self) -> None:
        self.commands: list[tuple[RedisArg, ...]] = []

    def call(self, command: str, *args: RedisArg) -> None:
        """Stage any Redis write command, e.g. ``effects.call("ZADD", key, 1, member)``."""
        if not command or not command.replace(" ", "").isalpha():
            raise ValueError(f"not a Redis command name: {command!r}")
        self.commands.append((command, *args))

    def set(self, key: str, value: RedisArg) -> None:
        """Stage ``SET key value``."""
        self.commands.append(("SET", key, value))

    def hset(self, key: str, mapping: Mapping[str, RedisArg]) -> None:
        """Stage ``HSET key field value ...``."""
        if mapping:
            flat: list[RedisArg] = []
            for field, value in mapping.items():
                flat.extend((field, value))
            self.commands.append(("HSET", key, *flat))

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        """Stage ``HINCRBYFLOAT key field amount``."""
        self.commands.append(("HINCRBYFLOAT", key, field, repr(float(amount))))

    def rpush(self, key: str, *values: RedisArg) -> None:
        """Stage ``RPUSH key value ...``."""
        if values:
            self.commands.append(("RPUSH", key, *values))

    def delete(self, *keys: str) -> None:
        """Stage ``DEL key ...``."""
        if keys:
            self.commands.append(("DEL", *keys))

    def __len__(self) -> int:
        """Return the number of staged commands."""
        return len(self.commands)


class Completions(Protocol):
    """Where a handler group keeps which idempotent handler completed which event."""

    def completed(self, handler_name: str, event_id: str) -> bool:
        """Return whether ``handler_name`` already completed ``event_id``."""

    async def complete(self, handler_name: str, event_id: str,
                       commands: list[tuple[RedisArg, ...]]) -> int:
        """Record the completion with ``commands``, atomically; return how many Redis refused."""
