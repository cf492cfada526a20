"""The in-process EventBus: the platform's API on our registry and dispatcher.

Async tests (pytest-asyncio auto mode), no servers. Every wait polls for its
condition under a deadline; handlers that must hang wait on an
``asyncio.Event`` that never fires, and their timeouts are short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from silvertine_streams.domain.flow import DEFAULT_OVERFLOW
from silvertine_streams.events import EventType, MarketDataEvent, OrderEvent, OrderSide
from silvertine_streams.handlers import EventBus, HandlerPriority, HandlerRegistry
from silvertine_streams.settings import load_settings
from tests import handler_fixtures

MARKET_DATA = EventType.MARKET_DATA


def quote(symbol: str = "BTC/USD", price: float = 50000.0, **fields: Any) -> MarketDataEvent:
    return MarketDataEvent(symbol=symbol, price=price, volume=fields.pop("volume", 1.0), **fields)


def order(order_id: str = "o-1", **fields: Any) -> OrderEvent:
    return OrderEvent(order_id=order_id, symbol=fields.pop("symbol", "BTC/USD"),
                      side=OrderSide.BUY, quantity=fields.pop("quantity", 1.0), **fields)


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` is true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


# --------------------------------------------------------------------------- the platform's cases


async def test_the_platforms_integration_case_once_and_not_again() -> None:
    from silvertine_streams import EventBus as PublicEventBus
    from silvertine_streams import HandlerPriority as PublicPriority

    received: list[MarketDataEvent] = []

    async def handler(event: MarketDataEvent) -> None:
        received.append(event)

    bus = PublicEventBus()
    bus.subscribe(handler, [EventType.MARKET_DATA], PublicPriority.NORMAL)
    await bus.start()
    event = MarketDataEvent(symbol="BTC/USD", price=50000.0, volume=100)
    assert await bus.publish(event) is True
    await until(lambda: received)
    assert await bus.publish(event) is False  # the same event again: dropped, counted
    await bus.stop()
    assert received == [event]
    assert received[0] is event
    metrics = bus.get_metrics()
    assert (metrics["events_published"], metrics["events_processed"]) == (1, 1)
    assert metrics["events_duplicate"] == 1


async def test_a_replayed_event_passes_the_id_window_and_is_not_remembered() -> None:
    received: list[MarketDataEvent] = []
    bus = EventBus()
    bus.subscribe(received.append, [MARKET_DATA])
    await bus.start()
    live = quote()
    assert await bus.publish(live) is True
    assert await bus.publish_replayed(live) is True  # a replay delivers it again
    fresh = quote(price=1.0)
    assert await bus.publish_replayed(fresh) is True
    assert await bus.publish(fresh) is True  # the replay did not make it a duplicate
    assert await bus.publish(live) is False  # the live id is still remembered
    await bus.stop()
    assert received == [live, live, fresh, fresh]
    with pytest.raises(TypeError):
        await bus.publish_replayed("not an event")  # type: ignore[arg-type]


async def test_a_replayed_event_at_a_full_queue_keeps_a_live_ids_memory() -> None:
    bus = EventBus(max_queue_size=1, overflow={"market_data": "drop_newest"})
    await bus.start()
    gate = asyncio.Event()

    async def held(event: MarketDataEvent) -> None:
        await gate.wait()

    bus.subscribe(held, [MARKET_DATA])
    first, second = quote(price=1.0), quote(price=2.0)
    assert await bus.publish(first) is True
    await until(lambda: bus.get_metrics()["queue_sizes"]["market_data"] == 1
                and not bus._lanes[MARKET_DATA].queue)
    assert await bus.publish(second) is True  # queued: the queue is full now
    assert await bus.publish_replayed(first) is False  # refused by drop_newest
    assert await bus.publish(first) is False  # still a duplicate of the live one
    gate.set()
    await bus.stop()


async def test_the_platforms_performance_floor() -> None:
    """10,000 events, one counting handler, more than 1,000 events/s (the platform's test)."""
    count = 0

    async def counter(event: MarketDataEvent) -> None:
        nonlocal count
        count += 1

    events = [quote(f"SYM{i % 10}", 100.0 + i % 7) for i in range(10_000)]
    bus = EventBus()
    bus.subscribe(counter, [MARKET_DATA])
    await bus.start()
    started = time.perf_counter()
    for event in events:
        await bus.publish(event)
    await until(lambda: count == len(events), timeout=30)
    elapsed = time.perf_counter() - started
    await bus.stop()
    assert count / elapsed > 1_000


async def test_a_handler_fixtures_setup_runs_unchanged_on_the_bus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/handler_fixtures.py's setup (the worker's SILVERTINE_HANDLERS) on the bus."""
    recorded: list[str] = []

    async def record(event: Any) -> None:  # the fixture's recorder writes to Redis
        recorded.append(event.event_id)

    monkeypatch.setattr(handler_fixtures, "record", record)
    bus = EventBus(handler_timeout_s=0.05, failure_threshold=2, reset_s=60.0)
    handler_fixtures.setup(bus)
    orders = [order(f"o-{i}") for i in range(6)]
    async with bus:
        for event in orders:
            await bus.publish(event)
        await until(lambda: len(recorded) == len(orders))
    assert recorded == [e.event_id for e in orders]
    metrics = bus.get_metrics()
    assert metrics["handler_circuit_breakers"] == {
        "hang": "open", "explode": "open", "record": "closed"}
    assert metrics["events_failed"] == 4  # 2 timeouts + 2 failures, then both circuits open
    assert metrics["events_processed"] == len(orders)


# --------------------------------------------------------------------------- registry and order


def test_the_bus_is_a_handler_registry() -> None:
    bus = EventBus()
    assert isinstance(bus, HandlerRegistry)
    handler_id = bus.subscribe(lambda e: None, "market_data", name="x")
    assert bus.get(handler_id) is not None
    assert bus.unsubscribe(handler_id) is True
    assert len(bus) == 0


async def test_priority_groups_run_in_order_and_each_finishes_first() -> None:
    log: list[str] = []

    def make(name: str) -> Callable[[Any], Any]:
        async def handler(event: Any) -> None:
            log.append(f"{name}>")
            await asyncio.sleep(0.001)
            log.append(f"<{name}")
        return handler

    bus = EventBus()
    for priority in reversed(HandlerPriority):  # subscribed LOW first: order is by priority
        bus.subscribe(make(priority.name), [MARKET_DATA], priority)
    async with bus:
        await bus.publish(quote())
    assert log == ["CRITICAL>", "<CRITICAL", "HIGH>", "<HIGH", "NORMAL>", "<NORMAL",
                   "LOW>", "<LOW"]


async def test_handlers_of_one_priority_run_concurrently() -> None:
    both_in = asyncio.Event()
    inside = 0

    async def meet(event: Any) -> None:
        nonlocal inside
        inside += 1
        if inside == 2:
            both_in.set()
        await both_in.wait()  # deadlocks unless the two run at the same time

    bus = EventBus(handler_timeout_s=2.0)
    bus.subscribe(meet, [MARKET_DATA], HandlerPriority.HIGH)
    bus.subscribe(meet, [MARKET_DATA], HandlerPriority.HIGH)
    async with bus:
        await bus.publish(quote())
    assert bus.get_metrics()["events_failed"] == 0


async def test_each_event_type_keeps_its_publish_order() -> None:
    seen: dict[str, list[str]] = {"market_data": [], "order": []}

    async def market(event: MarketDataEvent) -> None:
        seen["market_data"].append(event.event_id)
        if len(seen["market_data"]) % 7 == 0:
            await asyncio.sleep(0)  # interleave with the other lane

    def orders(event: OrderEvent) -> None:
        seen["order"].append(event.event_id)

    bus = EventBus(max_queue_size=50)  # small queues: publishers block and resume
    bus.subscribe(market, [MARKET_DATA])
    bus.subscribe(orders, [EventType.ORDER])
    published: dict[str, list[str]] = {"market_data": [], "order": []}
    async with bus:
        for i in range(1_000):
            event = quote(f"S{i % 5}") if i % 3 else order(f"o-{i}")
            published[event.event_type.value].append(event.event_id)
            await bus.publish(event)
    assert seen == published


async def test_unsubscribed_handlers_get_nothing_more() -> None:
    seen: list[Any] = []
    bus = EventBus()
    handler_id = bus.subscribe(seen.append, [MARKET_DATA])
    async with bus:
        await bus.publish(first := quote())
        await until(lambda: seen)
        bus.unsubscribe(handler_id)
        await bus.publish(quote())
    assert seen == [first]
    assert bus.get_metrics()["events_processed"] == 2


# --------------------------------------------------------------------------- isolation


async def test_a_failing_handler_opens_its_circuit_and_the_others_keep_running() -> None:
    good: list[Any] = []

    def bad(event: Any) -> None:
        raise RuntimeError("strategy bug")

    bus = EventBus()  # the platform's defaults: 5 failures open a circuit
    bus.subscribe(bad, [MARKET_DATA], HandlerPriority.CRITICAL, name="bad")
    bus.subscribe(good.append, [MARKET_DATA], name="good")
    async with bus:
        for i in range(20):
            await bus.publish(quote(price=100.0 + i))
            await asyncio.sleep(0)
    assert len(good) == 20
    metrics = bus.get_metrics()
    assert metrics["handler_circuit_breakers"] == {"bad": "open", "good": "closed"}
    assert metrics["events_failed"] == 5
    assert metrics["events_processed"] == 20


async def test_from_settings_takes_the_config_files_event_bus_section() -> None:
    settings = load_settings(bus_max_queue_size=7, bus_enable_metrics=False,
                             circuit_failure_threshold=2, circuit_reset_s=600.0)

    def bad(event: Any) -> None:
        raise RuntimeError("strategy bug")

    bus = EventBus.from_settings(settings)
    assert (bus.max_queue_size, bus.enable_metrics) == (7, False)
    bus.subscribe(bad, [MARKET_DATA], name="bad")
    async with bus:
        for i in range(5):
            await bus.publish(quote(price=100.0 + i))
    metrics = bus.get_metrics()
    assert metrics["events_failed"] == 2  # the settings' threshold, not the default 5
    assert metrics["handler_circuit_breakers"] == {"bad": "open"}


async def test_a_hanging_async_handler_times_out_and_other_types_keep_flowing() -> None:
    never = asyncio.Event()
    orders: list[Any] = []
    quotes: list[Any] = []

    async def hang(event: Any) -> None:
        await never.wait()

    bus = EventBus(handler_timeout_s=0.05, failure_threshold=100)
    bus.subscribe(hang, [MARKET_DATA], HandlerPriority.HIGH, name="hang")
    bus.subscribe(quotes.append, [MARKET_DATA], HandlerPriority.LOW)
    bus.subscribe(orders.append, [EventType.ORDER])
    async with bus:
        await bus.publish(quote())
        await bus.publish(placed := order())
        await until(lambda: orders)  # while market data waits on the hanging handler
        assert orders == [placed] and quotes == []
        await until(lambda: quotes, timeout=2)
    metrics = bus.get_metrics()
    assert metrics["events_failed"] == 1
    assert metrics["handler_circuit_breakers"]["hang"] == "closed"


async def test_duplicate_handler_names_are_told_apart_in_the_metrics() -> None:
    bus = EventBus()
    first = bus.subscribe(lambda e: None, [MARKET_DATA], name="same")
    second = bus.subscribe(lambda e: None, [MARKET_DATA], name="same")
    assert set(bus.get_metrics()["handler_circuit_breakers"]) == {
        f"same#{first[:8]}", f"same#{second[:8]}"}


# --------------------------------------------------------------------------- lifecycle


async def test_stop_delivers_everything_queued_then_refuses() -> None:
    seen: list[Any] = []

    async def slow(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    bus = EventBus()
    bus.subscribe(slow, [MARKET_DATA])
    await bus.start()
    events = [quote(price=100.0 + i) for i in range(500)]
    for event in events:
        await bus.publish(event)
    assert bus.get_metrics()["queue_sizes"]["market_data"] > 0
    await bus.stop()
    assert seen == events
    assert bus.get_metrics()["queue_sizes"] == {t.value: 0 for t in EventType}
    with pytest.raises(RuntimeError, match="not running"):
        await bus.publish(quote())


async def test_stop_lets_handlers_finish_their_cascade() -> None:
    """market data -> order published by a handler while the bus is stopping."""
    orders: list[Any] = []
    bus = EventBus()

    async def strategy(event: MarketDataEvent) -> None:
        await bus.publish(order(f"o-{event.event_id}"))

    bus.subscribe(strategy, [MARKET_DATA])
    bus.subscribe(orders.append, [EventType.ORDER])
    await bus.start()
    for i in range(10):
        await bus.publish(quote(price=100.0 + i))
    await bus.stop()
    assert len(orders) == 10


async def test_publish_needs_a_running_bus_and_one_of_our_events() -> None:
    bus = EventBus()
    with pytest.raises(RuntimeError, match="start"):
        await bus.publish(quote())
    async with bus:
        with pytest.raises(TypeError, match="event of silvertine_streams.events"):
            await bus.publish({"event_type": "market_data"})  # type: ignore[arg-type]  # the point
    await bus.stop()  # stopping twice is fine
    async with bus:  # and so is starting again
        assert await bus.publish(quote())


# --------------------------------------------------------------------------- overflow


async def _gated(bus: EventBus, event_types: list[EventType]) -> tuple[list[Any], asyncio.Event,
                                                                      asyncio.Event]:
    """Subscribe a handler that holds the first event until the gate opens."""
    seen: list[Any] = []
    entered, gate = asyncio.Event(), asyncio.Event()

    async def held(event: Any) -> None:
        entered.set()
        await gate.wait()
        seen.append(event)

    bus.subscribe(held, event_types)
    return seen, entered, gate


async def test_block_makes_publish_wait_for_room() -> None:
    bus = EventBus(max_queue_size=2, handler_timeout_s=10.0)
    seen, entered, gate = await _gated(bus, [EventType.ORDER])
    orders = [order(f"o-{i}") for i in range(4)]
    async with bus:
        await bus.publish(orders[0])
        await until(entered.is_set)  # o-0 is with the handler; the queue is empty
        await bus.publish(orders[1])
        await bus.publish(orders[2])  # the queue is full now
        fourth = asyncio.create_task(bus.publish(orders[3]))
        await asyncio.sleep(0.01)
        assert not fourth.done()
        assert bus.get_metrics()["queue_sizes"]["order"] == 3
        gate.set()
        assert await fourth is True
    assert seen == orders


async def test_conflate_keeps_the_latest_quote_per_symbol() -> None:
    bus = EventBus(max_queue_size=3, handler_timeout_s=10.0,
                   overflow={"market_data": "conflate"})
    seen, entered, gate = await _gated(bus, [MARKET_DATA])
    a1, a2, b1, a3, b2 = (quote("A", 1.0), quote("A", 2.0), quote("B", 1.0), quote("A", 3.0),
                          quote("B", 2.0))
    async with bus:
        await bus.publish(a1)
        await until(entered.is_set)
        for event in (a2, b1, a3):
            await bus.publish(event)
        assert await bus.publish(b2) is True  # full: A2 and B1 make way, in no time
        gate.set()
    assert seen == [a1, a3, b2]
    metrics = bus.get_metrics()
    assert metrics["events_shed"] == {"conflated": 2}
    assert (metrics["events_published"], metrics["events_processed"]) == (5, 3)


@pytest.mark.parametrize(("policy", "expected", "accepted"), [
    ("drop_oldest", ["p0", "p2", "p3"], True),
    ("drop_newest", ["p0", "p1", "p2"], False),
])
async def test_drop_policies(policy: str, expected: list[str], accepted: bool) -> None:
    bus = EventBus(max_queue_size=2, handler_timeout_s=10.0,
                   overflow={"market_data": policy})  # type: ignore[dict-item]  # str, not the Literal
    seen, entered, gate = await _gated(bus, [MARKET_DATA])
    events = {f"p{i}": quote(price=float(i + 1)) for i in range(4)}
    async with bus:
        await bus.publish(events["p0"])
        await until(entered.is_set)
        await bus.publish(events["p1"])
        await bus.publish(events["p2"])
        assert await bus.publish(events["p3"]) is accepted
        gate.set()
    names = {id(e): name for name, e in events.items()}
    assert [names[id(e)] for e in seen] == expected
    assert bus.get_metrics()["events_shed"] == {f"dropped_{policy.split('_')[1]}": 1}


async def test_a_refused_event_may_be_published_again() -> None:
    bus = EventBus(max_queue_size=1, handler_timeout_s=10.0,
                   overflow={"market_data": "drop_newest"})
    seen, entered, gate = await _gated(bus, [MARKET_DATA])
    first, second, third = quote(price=1.0), quote(price=2.0), quote(price=3.0)
    async with bus:
        await bus.publish(first)
        await until(entered.is_set)
        await bus.publish(second)
        assert await bus.publish(third) is False  # refused: not remembered as seen
        gate.set()
        await until(lambda: len(seen) == 2)
        assert await bus.publish(third) is True
    assert seen == [first, second, third]


@pytest.mark.parametrize("overflow", [
    {"order": "conflate"}, {"fill": "drop_oldest"}, {"market_data": "evict"}, {"quotes": "block"},
])
def test_orders_and_fills_always_block_and_policies_are_checked(overflow: Any) -> None:
    with pytest.raises(ValueError):
        EventBus(overflow=overflow)


def test_the_workers_live_policies_can_be_passed_whole() -> None:
    EventBus(overflow=DEFAULT_OVERFLOW)


# --------------------------------------------------------------------------- dedupe and metrics


async def test_ids_are_forgotten_once_enough_newer_ids_were_seen() -> None:
    seen: list[Any] = []
    bus = EventBus(idempotency_max_ids=2)
    bus.subscribe(seen.append, [MARKET_DATA])
    events = [quote(price=float(i + 1)) for i in range(6)]

    async def delivered(count: int) -> None:
        await until(lambda: len(seen) == count)

    async with bus:
        for i, event in enumerate(events):
            await bus.publish(event)
            await delivered(i + 1)  # a drain after each publish
        assert await bus.publish(events[5]) is False  # recent: still a duplicate
        assert await bus.publish(events[0]) is True   # 4 newer ids since: forgotten
        await delivered(7)


async def test_get_metrics_reports_every_field() -> None:
    def fails(event: Any) -> None:
        raise ValueError("no")

    bus = EventBus()
    bus.subscribe(lambda e: time.sleep(0.001), [MARKET_DATA], name="sleepy")
    bus.subscribe(fails, [EventType.ORDER], name="fails")
    async with bus:
        for i in range(3):
            await bus.publish(quote(price=float(i + 1)))
        await bus.publish(order())
    metrics = bus.get_metrics()
    assert set(metrics) >= {"events_published", "events_processed", "events_failed",
                            "queue_sizes", "avg_processing_times", "handler_circuit_breakers"}
    assert (metrics["events_published"], metrics["events_processed"],
            metrics["events_failed"]) == (4, 4, 1)
    assert metrics["queue_sizes"] == {t.value: 0 for t in EventType}
    times = metrics["avg_processing_times"]
    assert set(times) == {t.value for t in EventType}
    assert 0.001 <= times["market_data"] < 1.0
    assert times["fill"] == 0.0
    assert metrics["handler_circuit_breakers"] == {"sleepy": "closed", "fails": "closed"}
    assert metrics["running"] is False
