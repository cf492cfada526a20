"""The demo runs headless on real servers; its trading loop reaches the logs consistently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

from redis.asyncio import Redis

from silvertine_streams.demo.desk import DESK_KEY
from silvertine_streams.settings import Settings, settings_env
from tests.logcheck import assert_log_invariants, read_dlq, read_log


async def test_the_demo_trades_and_its_order_table_matches_the_logged_fills(
    pipeline_settings: Settings, redis_client: Redis
) -> None:
    env = settings_env(pipeline_settings, os.environ)
    env["SILVERTINE_METRICS_PORT"] = "0"
    result = subprocess.run(
        [sys.executable, "-m", "silvertine_streams", "demo", "--seconds", "10", "--headless",
         "--rate", "300"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "summary" in result.stdout and "replay this session" in result.stdout

    market_data = await read_log(redis_client, "market_data")
    signals = await read_log(redis_client, "signal")
    orders = await read_log(redis_client, "order")
    fills = await read_log(redis_client, "fill")
    assert len(market_data) > 1000, len(market_data)
    assert signals and orders and fills, (len(signals), len(orders), len(fills))
    for events in (market_data, signals, orders, fills):
        assert_log_invariants(events)

    desk = json.loads(await redis_client.get(DESK_KEY))
    logged_qty: dict[str, float] = defaultdict(float)
    for fill in fills:
        logged_qty[fill["order_id"]] += fill["executed_quantity"]
    table_qty = {oid: qty for oid, qty in desk["filled_by_order"].items() if qty}
    assert table_qty == dict(logged_qty)
    # The injected duplicates were caught, and the injected over-fills refused.
    letters = await read_dlq(redis_client)
    reasons = {letter["reason"].split(":", 1)[0] for letter in letters}
    assert {"over_fill", "illegal_transition"} <= reasons, (
        [letter["reason"] for letter in letters][:5], desk["table_rejections"],
        desk["order_status"])
    ids = [e["event_id"] for e in market_data]
    assert len(ids) == len(set(ids))
