"""The demo desk across ``kill -9``: positions equal the logged fills, orders the logged lifecycle.

A worker runs the demo desk (``SILVERTINE_HANDLERS=silvertine_streams.demo.desk:setup``)
while market data flows; the strategy signals, risk places orders, the venue
answers with fills, and the book (idempotent handlers) keeps positions and
order states. The worker is SIGKILLed at random moments, four times, once its
book has applied something; a new worker starts each time. Once the logs
settle and the handler group has finished them:

* each symbol's position in ``demo:desk:positions`` is the signed sum of the
  logged fills, each order's filled quantity (``demo:desk:filled``) the sum of
  its logged fills, and its state (``demo:desk:order-states`` with it) what
  its logged order events and fills make it (DESIGN §3.6, exactly once in effect);
* the book applied every logged fill and order event exactly once;
* no execution was logged twice (a venue answering an order again after a crash
  sends the same events, which the log keeps once).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter, defaultdict
from typing import Any

import pytest
from redis.asyncio import Redis

from silvertine_streams.demo.desk import (
    BOOK_FILLS,
    BOOK_ORDER_EVENTS,
    FILLED_KEY,
    ORDER_STATES_KEY,
    POSITIONS_KEY,
)
from silvertine_streams.demo.trading import MarketFeed, order_status
from silvertine_streams.events import OrderStatus
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.settings import Settings
from silvertine_streams.topics import handler_progress, log_stream
from tests.faults.test_worker_faults import (
    kill_at_random_after,
    produce_paced,
    worker_report,
)
from tests.helpers import async_wait_for
from tests.logcheck import read_log
from tests.pipeline_support import WorkerPool
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

KILLS = 4
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "META")
TYPES = ("market_data", "signal", "order", "fill")
SEED = 7


def start(pool: WorkerPool, settings: Settings) -> WorkerProcess:
    return pool.start(settings, SILVERTINE_OVERFLOW_POLICIES="market_data=block")


async def lengths(redis: Redis, app_id: str) -> tuple[dict[str, int], int]:
    """Each log's length, and how many of their entries the handler group has not finished."""
    sizes = {t: int(await redis.xlen(log_stream(t))) for t in TYPES}
    done = {k.decode(): int(v) for k, v in (await redis.hgetall(handler_progress(app_id))).items()}
    return sizes, sum(sizes[t] - done.get(t, 0) for t in TYPES)


async def test_the_desk_book_equals_the_logged_fills_and_orders_across_kill_9s(
    pipeline_settings: Settings, redis_client: Redis, workers: WorkerPool
) -> None:
    rng = random.Random(SEED)
    settings = pipeline_settings.model_copy(
        update={"handlers": ("silvertine_streams.demo.desk:setup",)})
    feed = MarketFeed(SYMBOLS, seed=1, source="feed")
    stop = asyncio.Event()
    worker = start(workers, settings)
    async with Publisher(settings) as publisher:
        async def send_round(_: int) -> None:
            await publisher.publish_many(feed.ticks(12))

        production = asyncio.create_task(produce_paced(send_round, interval_s=0.05, stop=stop))
        try:
            for kill in range(KILLS):
                applied_before = int(await redis_client.llen(BOOK_ORDER_EVENTS))

                async def book_at_work(before: int = applied_before) -> bool:
                    assert not production.done(), "the feed stopped early"
                    return int(await redis_client.llen(BOOK_ORDER_EVENTS)) > before

                await kill_at_random_after(book_at_work, worker, workers, rng,
                                           f"worker {kill}'s book to apply an order event")
                worker = start(workers, settings)
            stop.set()
            await production
        finally:
            stop.set()
            production.cancel()

    # Settled: the logs stopped growing and the group finished all of them.
    previous: list[dict[str, int]] = []

    async def settled() -> bool:
        sizes, lag = await lengths(redis_client, settings.app_id)
        still = bool(previous) and previous[-1] == sizes and lag == 0
        previous.append(sizes)
        return still

    try:
        await async_wait_for(settled, timeout=120, interval=1.0,
                             message="the logs to settle and the handler group to finish them")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker_report(workers)}") from None

    fills = await read_log(redis_client, "fill")
    orders = await read_log(redis_client, "order")
    assert fills and orders, (len(fills), len(orders))
    executions = Counter((f["order_id"], f["trade_id"]) for f in fills)
    assert not [k for k, n in executions.items() if n > 1], "an execution was logged twice"

    # The book applied every logged fill and order event, once each.
    applied_fills = [json.loads(v)["event_id"]
                     for v in await redis_client.lrange(BOOK_FILLS, 0, -1)]
    applied_orders = [json.loads(v)["event_id"]
                      for v in await redis_client.lrange(BOOK_ORDER_EVENTS, 0, -1)]
    assert Counter(applied_fills) == Counter(f["event_id"] for f in fills)
    assert Counter(applied_orders) == Counter(o["event_id"] for o in orders)

    # Positions: the signed sum of the logged fills.
    expected_positions: dict[str, float] = defaultdict(float)
    for f in fills:
        expected_positions[f["symbol"]] += (f["executed_quantity"] if f["side"] == "buy"
                                            else -f["executed_quantity"])
    positions = {k.decode(): float(v)
                 for k, v in (await redis_client.hgetall(POSITIONS_KEY)).items()}
    assert positions == pytest.approx(dict(expected_positions))

    # Order states: the last reported status in log order, with the logged fills.
    filled: dict[str, float] = defaultdict(float)
    for f in fills:
        filled[f["order_id"]] += f["executed_quantity"]
    expected_states: dict[str, dict[str, Any]] = {}
    for o in orders:
        quantity = o["quantity"]
        status = o["status"]
        done = filled[o["order_id"]]
        if status in ("pending", "submitted") and done > 0:
            status = "filled" if done >= quantity - 1e-9 * max(1.0, quantity) else (
                "partially_filled")
        expected_states[o["order_id"]] = {"status": status, "filled": done,
                                          "quantity": quantity}
    book_filled = {k.decode(): float(v)
                   for k, v in (await redis_client.hgetall(FILLED_KEY)).items()}
    states = {}
    for key, value in (await redis_client.hgetall(ORDER_STATES_KEY)).items():
        state = json.loads(value)
        done = book_filled.get(key.decode(), 0.0)
        states[key.decode()] = {"filled": done, "quantity": state["quantity"], "status":
                                order_status(OrderStatus(state["reported"]), state["quantity"],
                                             done).value}
    assert states.keys() == expected_states.keys()
    wrong = {oid: (states[oid], want) for oid, want in expected_states.items()
             if states[oid]["status"] != want["status"]
             or not math.isclose(states[oid]["filled"], want["filled"], abs_tol=1e-9)}
    assert not wrong, f"{len(wrong)} orders differ from their log, e.g. {list(wrong.items())[:3]}"
    assert worker.alive(), f"the last worker died\n{worker_report(workers)}"
