"""Unit tests for idempotent handlers: ``Effects``, ``derived_id``, the registry's
rules for them, and how the dispatcher skips, records and discards (no I/O: the
handler group's completions are an in-memory stand-in)."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

import pytest

from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.handlers import HandlerDispatcher, HandlerPriority, HandlerRegistry
from silvertine_streams.handlers.effects import Effects, RedisArg, derived_id

ORDER = "order"


class Ev(NamedTuple):
    event_id: str
    n: int = 0


class MemoryCompletions:
    """Records completions in memory, as the group records them in Redis."""

    def __init__(self, done: set[tuple[str, str]] | None = None) -> None:
        self.done = set(done or ())
        self.records: list[tuple[str, str, list[tuple[RedisArg, ...]]]] = []
        self.refuse = 0

    def completed(self, handler_name: str, event_id: str) -> bool:
        return (handler_name, event_id) in self.done

    async def complete(self, handler_name: str, event_id: str,
                       commands: list[tuple[RedisArg, ...]]) -> int:
        self.done.add((handler_name, event_id))
        self.records.append((handler_name, event_id, list(commands)))
        return self.refuse


def test_effects_stage_commands_in_order() -> None:
    effects = Effects()
    effects.set("k", "v")
    effects.hset("h", {"a": 1, "b": "2"})
    effects.hincrbyfloat("pos", "AAPL", 100)
    effects.rpush("l", "x", b"y")
    effects.delete("gone")
    effects.call("ZADD", "z", 1, "m")
    effects.hset("h", {})  # nothing to stage
    effects.rpush("l")
    assert effects.commands == [
        ("SET", "k", "v"), ("HSET", "h", "a", 1, "b", "2"),
        ("HINCRBYFLOAT", "pos", "AAPL", "100.0"), ("RPUSH", "l", "x", b"y"), ("DEL", "gone"),
        ("ZADD", "z", 1, "m")]
    assert len(effects) == 6
    with pytest.raises(ValueError):
        effects.call("SET k v; DEL")


def test_derived_ids_are_stable_and_distinct() -> None:
    assert derived_id("e-1", "fill", 1) == derived_id("e-1", "fill", 1)
    assert len({derived_id("e-1", "fill", 1), derived_id("e-1", "fill", 2),
                derived_id("e-2", "fill", 1)}) == 3


def test_idempotent_names_must_be_unique_and_resume_callbacks_are_kept() -> None:
    registry = HandlerRegistry()
    registry.subscribe(lambda e, fx: None, [ORDER], name="book", idempotent=True)
    registry.subscribe(lambda e: None, [ORDER], name="book")  # a plain one may share it
    with pytest.raises(ValueError, match="book"):
        registry.subscribe(lambda e, fx: None, ["fill"], name="book", idempotent=True)

    def reload() -> None:
        pass

    registry.on_resume(reload)
    assert registry.resume_callbacks == (reload,)
    assert registry.event_types() == frozenset({ORDER})
    (group,) = registry.handlers_for(ORDER)
    assert [s.idempotent for s in group] == [True, False]


async def test_an_idempotent_handler_gets_its_effects_and_its_call_is_recorded_with_them(
) -> None:
    registry = HandlerRegistry()
    calls: list[str] = []

    async def book(event: Ev, effects: Effects) -> None:
        calls.append(event.event_id)
        effects.set(f"k:{event.event_id}", event.n)

    registry.subscribe(book, [ORDER], name="book", idempotent=True)
    completions = MemoryCompletions(done={("book", "e2")})
    report = await HandlerDispatcher(registry).dispatch(
        [Ev("e1", 1), Ev("e2", 2), Ev("e3", 3)], ORDER, completions)
    assert calls == ["e1", "e3"]  # e2 was completed before (a redelivery)
    assert completions.records == [("book", "e1", [("SET", "k:e1", 1)]),
                                   ("book", "e3", [("SET", "k:e3", 3)])]
    assert report.skipped_done == 1


async def test_a_failed_or_timed_out_call_is_recorded_without_its_staged_writes() -> None:
    registry = HandlerRegistry()

    def broken(event: Ev, effects: Effects) -> None:
        effects.set("never", 1)
        raise RuntimeError("bug")

    async def slow(event: Ev, effects: Effects) -> None:
        effects.set("late", 1)
        await asyncio.Event().wait()

    registry.subscribe(broken, [ORDER], HandlerPriority.HIGH, name="broken", idempotent=True)
    registry.subscribe(slow, [ORDER], name="slow", idempotent=True)
    completions = MemoryCompletions()
    async with asyncio.timeout(5):
        report = await HandlerDispatcher(registry, timeout_s=0.05).dispatch(
            [Ev("e1")], ORDER, completions)
    assert completions.records == [("broken", "e1", []), ("slow", "e1", [])]
    stats = {s.name: s for s in report.handlers.values()}
    assert (stats["broken"].failures, stats["slow"].timeouts) == (1, 1)


async def test_writes_redis_refused_count_as_a_failure_of_the_handler() -> None:
    registry = HandlerRegistry()
    handler_id = registry.subscribe(lambda e, fx: fx.set("k", 1), [ORDER], name="book",
                                    idempotent=True)
    completions = MemoryCompletions()
    completions.refuse = 1
    dispatcher = HandlerDispatcher(registry, failure_threshold=2)
    report = await dispatcher.dispatch([Ev("e1"), Ev("e2")], ORDER, completions)
    assert report.failed == 2
    circuit = dispatcher.circuit(handler_id)
    assert circuit is not None and circuit.state is CircuitState.OPEN


async def test_idempotent_handlers_of_one_priority_still_run_concurrently() -> None:
    registry = HandlerRegistry()
    both_in = asyncio.Barrier(2)

    async def a(event: Any, effects: Effects) -> None:
        await both_in.wait()
        effects.set("a", 1)

    async def b(event: Any, effects: Effects) -> None:
        await both_in.wait()
        effects.set("b", 1)

    registry.subscribe(a, [ORDER], name="a", idempotent=True)
    registry.subscribe(b, [ORDER], name="b", idempotent=True)
    completions = MemoryCompletions()
    async with asyncio.timeout(5):
        report = await HandlerDispatcher(registry).dispatch([Ev("e1")], ORDER, completions)
    assert report.failed == 0
    assert sorted(r[0] for r in completions.records) == ["a", "b"]


async def test_without_a_group_staged_writes_are_discarded_and_counted() -> None:
    registry = HandlerRegistry()
    seen: list[str] = []

    def book(event: Ev, effects: Effects) -> None:
        seen.append(event.event_id)
        effects.set("k", 1)
        effects.set("j", 2)

    registry.subscribe(book, [ORDER], name="book", idempotent=True)
    report = await HandlerDispatcher(registry).dispatch([Ev("e1")], ORDER)
    assert seen == ["e1"]
    (stats,) = report.handlers.values()
    assert stats.discarded == 2
