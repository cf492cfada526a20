"""Where system events and dead letters leave the pipeline.

The pipeline hands rejects and alerts to one :class:`Outbox` it is given; the
outbox knows the destinations (the Redis ``dlq`` sink, Kafka ``silvertine.dlq``,
the ``system`` topic). Callbacks that cannot await (a handler circuit opening,
the clock thread) queue their system events here; the pipeline sends the queue
with its next commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from silvertine_streams.events import SystemEvent
from silvertine_streams.sinks.dead_letters import DeadLetter

SendSystem = Callable[[SystemEvent], Awaitable[None]]
"""Sends one ``system`` event (to Kafka ``silvertine.system``); returns once Kafka has it."""
CopyDeadLetters = Callable[[Sequence[DeadLetter]], Awaitable[None]]
"""Copies dead letters to Kafka ``silvertine.dlq``."""


class DeadLetterWriter(Protocol):
    """The durable dead-letter sink (Redis ``dlq``)."""

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        """Write ``letters`` durably (retrying until Redis takes them)."""


class Outbox:
    """The pipeline's one way out for dead letters and system events.

    Args:
        dead_letter_sink: the durable Redis ``dlq`` sink.
        send_system: sends a ``system`` event.
        copy_dead_letters: copies dead letters to Kafka, after the durable write.
    """

    def __init__(self, dead_letter_sink: DeadLetterWriter, send_system: SendSystem,
                 copy_dead_letters: CopyDeadLetters) -> None:
        self._dead_letter_sink = dead_letter_sink
        self._send_system = send_system
        self._copy_dead_letters = copy_dead_letters
        self._queued: list[SystemEvent] = []
        self._sending: asyncio.Lock | None = None

    async def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Write ``letters`` to ``dlq`` (durable on return), then copy them to Kafka."""
        await self._dead_letter_sink.write(letters)
        await self._copy_dead_letters(letters)

    async def system(self, event: SystemEvent) -> None:
        """Send one system event now; return once Kafka confirmed it."""
        await self._send_system(event)

    def queue_system(self, event: SystemEvent) -> None:
        """Queue a system event from code that cannot await; sent by :meth:`send_queued`."""
        self._queued.append(event)

    async def send_queued(self) -> None:
        """Send the queued system events, oldest first; one whose send fails stays queued.

        Returns only when every event queued before the call was confirmed,
        also when another caller is sending it (callers take turns).
        """
        if self._sending is None:
            self._sending = asyncio.Lock()
        async with self._sending:
            while self._queued:
                event = self._queued.pop(0)
                try:
                    await self._send_system(event)
                except BaseException:
                    self._queued.insert(0, event)
                    raise
