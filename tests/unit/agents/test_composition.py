"""Unit tests for silvertine_streams.agents.composition: the engine a worker runs,
built from settings without Faust and without I/O.

The Redis client points at a closed port and is never used (the sinks connect on
their first write); the outbox records what leaves the engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from silvertine_streams.agents.composition import Engine, build_engine
from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.agents.policies import lanes, pipeline_policies
from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.events.enums import EventType
from silvertine_streams.events.model import MarketDataEvent, SystemEvent
from silvertine_streams.observability.metrics import REGISTRY
from silvertine_streams.settings import Settings, load_settings
from silvertine_streams.sinks.canonical_log import BULK_EVENTS_PER_CALL, MAX_EVENTS_PER_CALL
from silvertine_streams.sinks.dead_letters import DeadLetter
from silvertine_streams.topics import EVENT_TYPES, event_topic, log_stream


class RecordingOutbox(Outbox):
    """An outbox whose destinations are lists."""

    def __init__(self) -> None:
        self.sent: list[SystemEvent] = []
        self.letters: list[DeadLetter] = []
        super().__init__(self, self._send, self._copy)

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    async def _send(self, event: SystemEvent) -> None:
        self.sent.append(event)

    async def _copy(self, letters: Sequence[DeadLetter]) -> None:
        pass


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url("redis://127.0.0.1:1/0")
    yield client
    await client.aclose()


def build(redis: Redis, **overrides: Any) -> tuple[Engine, RecordingOutbox, Settings]:
    settings = load_settings(**overrides)
    outbox = RecordingOutbox()
    return build_engine(settings, redis, outbox), outbox, settings


async def test_every_consumed_type_gets_a_pipeline_on_its_topic_and_a_log_sink(
    redis: Redis,
) -> None:
    engine, outbox, settings = build(redis)
    assert list(engine.pipelines) == [event_topic(t) for t in EVENT_TYPES]
    assert [p.event_type for p in engine.pipelines.values()] == [EventType(t)
                                                                 for t in EVENT_TYPES]
    assert [sink.stream for sink in engine.log_sinks] == [log_stream(t) for t in EVENT_TYPES]
    policies = pipeline_policies(settings)
    assert {p.event_type.value: p.policy for p in engine.pipelines.values()} == policies
    assert engine.lanes == lanes(settings)
    assert engine.outbox is outbox


async def test_a_worker_narrowed_to_some_types_builds_only_those(redis: Redis) -> None:
    engine, _, _ = build(redis, event_types="fill,order")
    assert list(engine.pipelines) == [event_topic("order"), event_topic("fill")]
    assert [sink.stream for sink in engine.log_sinks] == [log_stream("order"), log_stream("fill")]


async def test_settings_reach_the_parts_they_configure(redis: Redis) -> None:
    engine, _, _ = build(redis, dedupe_window_s=600.0, memory_limit_mb=0,
                         lane_max_pause_s=0.2, lanes="market_data=critical")
    assert {sink.window_s for sink in engine.log_sinks} == {600.0}
    assert engine.memory.limit_bytes == 0  # 0 MB: the guard is off
    assert not engine.memory.should_throttle()
    assert engine.controller.gate.max_pause_s == 0.2
    assert engine.controller.is_critical(engine.lanes["market_data"])


async def test_lower_lanes_write_the_log_in_short_calls_critical_ones_whole(
    redis: Redis,
) -> None:
    # An order's write waits in Redis behind at most one short market-data call.
    engine, _, _ = build(redis, lanes="signal=critical")
    per_call = {sink.event_type: sink.max_per_call for sink in engine.log_sinks}
    assert per_call == {"market_data": BULK_EVENTS_PER_CALL, "order": MAX_EVENTS_PER_CALL,
                        "fill": MAX_EVENTS_PER_CALL, "signal": MAX_EVENTS_PER_CALL,
                        "system": BULK_EVENTS_PER_CALL}
    assert BULK_EVENTS_PER_CALL < MAX_EVENTS_PER_CALL


async def test_handlers_subscribed_on_the_registry_are_run_by_the_dispatcher(
    redis: Redis,
) -> None:
    engine, _, _ = build(redis)
    seen: list[str] = []
    engine.registry.subscribe(lambda event: seen.append(event.symbol), ["market_data"])
    report = await engine.dispatcher.dispatch([MarketDataEvent(symbol="AAPL", price=1.0)],
                                              "market_data")
    assert seen == ["AAPL"] and report.failed == 0


async def test_an_opening_circuit_queues_an_alert_and_sets_its_gauge(redis: Redis) -> None:
    engine, outbox, _ = build(redis, circuit_failure_threshold=2, circuit_reset_s=30.0)

    def broken(event: object) -> None:
        raise RuntimeError("handler bug")

    handler_id = engine.registry.subscribe(broken, ["market_data"], name="composition-broken")
    tick = MarketDataEvent(symbol="AAPL", price=1.0)
    await engine.dispatcher.dispatch([tick], "market_data")
    assert outbox.sent == [] and REGISTRY.get_sample_value(
        "silvertine_circuit_open", {"handler": "composition-broken"}) in (None, 0.0)
    await engine.dispatcher.dispatch([tick], "market_data")
    circuit = engine.dispatcher.circuit(handler_id)
    assert circuit is not None and circuit.state is CircuitState.OPEN
    assert REGISTRY.get_sample_value(
        "silvertine_circuit_open", {"handler": "composition-broken"}) == 1.0
    # Queued (the dispatcher calls back synchronously); sent with the next commit.
    assert outbox.sent == []
    await outbox.send_queued()
    (alert,) = outbox.sent
    assert (alert.kind, alert.severity.value, alert.symbol) == (
        "circuit_open", "error", "composition-broken")
    assert alert.details == {"handler": "composition-broken", "handler_id": handler_id,
                             "reset_s": 30.0}
