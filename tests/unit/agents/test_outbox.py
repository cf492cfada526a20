"""Unit tests for silvertine_streams.agents.outbox: dead letters are durable in Redis
before they are copied to Kafka, and queued system events leave oldest first.

The destinations are in-memory stand-ins that record the order of calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.events.model import SystemEvent
from silvertine_streams.sinks.dead_letters import DeadLetter

LETTERS = [DeadLetter(b"{bad", "invalid: not JSON", "silvertine.order/0/5"),
           DeadLetter(b"", "invalid: ingress entry has no 'event' field", "events:order/1-0")]


class Destinations:
    """The Redis dlq sink, the system topic and the Kafka dlq copy, in one call log."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail_durable_write: BaseException | None = None

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        if self.fail_durable_write is not None:
            raise self.fail_durable_write
        self.calls.append(("dlq", list(letters)))

    async def send_system(self, event: SystemEvent) -> None:
        self.calls.append(("system", event.kind))

    async def copy_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self.calls.append(("kafka dlq", list(letters)))


@pytest.fixture
def out() -> Destinations:
    return Destinations()


@pytest.fixture
def outbox(out: Destinations) -> Outbox:
    return Outbox(out, out.send_system, out.copy_dead_letters)


def system(kind: str) -> SystemEvent:
    return SystemEvent(kind=kind, message=kind, source="test")


async def test_dead_letters_are_written_durably_then_copied_to_kafka(
    outbox: Outbox, out: Destinations
) -> None:
    await outbox.dead_letters(LETTERS)
    assert out.calls == [("dlq", LETTERS), ("kafka dlq", LETTERS)]


async def test_dead_letters_are_not_copied_when_the_durable_write_fails(
    outbox: Outbox, out: Destinations
) -> None:
    out.fail_durable_write = ConnectionError("redis down")
    with pytest.raises(ConnectionError):
        await outbox.dead_letters(LETTERS)
    assert out.calls == []


async def test_a_system_event_is_sent_at_once(outbox: Outbox, out: Destinations) -> None:
    await outbox.system(system("sequence_gap"))
    assert out.calls == [("system", "sequence_gap")]


async def test_queued_system_events_wait_for_send_queued_and_go_oldest_first(
    outbox: Outbox, out: Destinations
) -> None:
    outbox.queue_system(system("circuit_open"))
    outbox.queue_system(system("clock_drift"))
    assert out.calls == []  # queueing never sends (the caller cannot await)
    await outbox.system(system("sequence_gap"))  # a direct send does not flush the queue
    await outbox.send_queued()
    assert out.calls == [("system", "sequence_gap"), ("system", "circuit_open"),
                         ("system", "clock_drift")]
    await outbox.send_queued()  # sent once: the queue is empty now
    assert len(out.calls) == 3


async def test_a_failed_send_keeps_the_unsent_events_queued(out: Destinations) -> None:
    failures = [ConnectionError("kafka down")]

    async def flaky_send(event: SystemEvent) -> None:
        if event.kind == "second" and failures:
            raise failures.pop()
        out.calls.append(("system", event.kind))

    outbox = Outbox(out, flaky_send, out.copy_dead_letters)
    for kind in ("first", "second", "third"):
        outbox.queue_system(system(kind))
    with pytest.raises(ConnectionError):
        await outbox.send_queued()
    assert out.calls == [("system", "first")]
    # A circuit-open alert is raised once: losing it here would lose it for good.
    await outbox.send_queued()
    assert out.calls == [("system", "first"), ("system", "second"), ("system", "third")]


async def test_concurrent_senders_send_each_queued_event_once(out: Destinations) -> None:
    async def slow_send(event: SystemEvent) -> None:
        await asyncio.sleep(0)  # give the other sender a turn mid-send
        out.calls.append(("system", event.kind))

    outbox = Outbox(out, slow_send, out.copy_dead_letters)
    kinds = [f"alert-{n}" for n in range(6)]
    for kind in kinds:
        outbox.queue_system(system(kind))
    await asyncio.gather(outbox.send_queued(), outbox.send_queued())
    assert sorted(str(kind) for _, kind in out.calls) == sorted(kinds)
