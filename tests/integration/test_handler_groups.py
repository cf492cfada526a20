"""``silvertine handlers list|forget`` on the real redis-server, run as an operator would.

Two apps follow ``log:market_data`` (and one of them ``log:order``) with
cursors moved the way a handler group moves them (:class:`GroupPosition`,
under its lease). ``list`` shows them; ``forget`` without ``--yes`` changes
nothing; with it the app is gone and a retention round trims past where it
held the log; a held lease refuses it; every run is in ``ops:actions``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from silvertine_streams.handlers.positions import Batch, GroupPosition
from silvertine_streams.ops.actions import ActionRecord, list_actions
from silvertine_streams.ops.handler_groups import HandlerGroupRunning, forget
from silvertine_streams.settings import Settings
from silvertine_streams.sinks.retention import Retention
from silvertine_streams.topics import (
    handler_completions,
    handler_cursor,
    handler_lease,
    handler_progress,
    log_followers,
    log_stream,
)
from tests.ops_support import run_ops

pytestmark = pytest.mark.integration

TICKS = log_stream("market_data")
ORDERS = log_stream("order")


async def fill_log(redis: Redis, stream: str, count: int) -> list[str]:
    pipe = redis.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {"event": f"{i}"})
    return [e.decode() for e in await pipe.execute()]


async def finish(redis: Redis, app: str, event_type: str, ids: list[str], done: int) -> None:
    """Follow ``log:<type>`` as ``app``'s group does, and finish its first ``done`` entries."""
    position = GroupPosition(redis, app, f"{app}-worker", lease_ms=60_000)
    assert await position.hold()
    await position.follow(event_type)
    if done:
        await position.advance(event_type, Batch(ids[done - 1], [], done, []))
    # An idempotent handler's record for the batch in hand (the cursor has not passed it).
    await redis.hset(handler_completions(app, event_type), f"book|e-{done}", "1")
    await position.release()


async def desks(redis: Redis) -> tuple[list[str], list[str]]:
    """desk-old finished 3 of 20 ticks and 2 of 5 orders; desk-live 15 of 20 ticks."""
    ticks = await fill_log(redis, TICKS, 20)
    orders = await fill_log(redis, ORDERS, 5)
    await finish(redis, "desk-old", "market_data", ticks, 3)
    await finish(redis, "desk-old", "order", orders, 2)
    await finish(redis, "desk-live", "market_data", ticks, 15)
    return ticks, orders


async def state_of(redis: Redis, app: str) -> dict[str, Any]:
    """Everything of ``app``'s that forget may change."""
    return {
        "followers": {t: bool(await redis.sismember(log_followers(t), app))
                      for t in ("market_data", "order")},
        "cursor": await redis.hgetall(handler_cursor(app)),
        "acked": await redis.hgetall(handler_progress(app)),
        "done": {t: await redis.hgetall(handler_completions(app, t))
                 for t in ("market_data", "order")},
    }


async def records(redis: Redis) -> list[ActionRecord]:
    return (await list_actions(redis, limit=None))[::-1]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("silvertine:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


async def test_list_shows_every_app_with_its_cursor_lag_lease_and_retention_hold(
    settings: Settings, redis_client: Redis
) -> None:
    ticks, orders = await desks(redis_client)
    live = GroupPosition(redis_client, "desk-live", "host-7", lease_ms=60_000)
    assert await live.hold()

    listed = run_ops(settings, "handlers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows == [
        {"app_id": "desk-live", "event_type": "market_data", "cursor": ticks[14], "lag": 5,
         "held_back": 0, "holds_retention": False, "lease_holder": "host-7"},
        {"app_id": "desk-old", "event_type": "market_data", "cursor": ticks[2], "lag": 17,
         "held_back": 12, "holds_retention": True, "lease_holder": None},
        {"app_id": "desk-old", "event_type": "order", "cursor": orders[1], "lag": 3,
         "held_back": 3, "holds_retention": True, "lease_holder": None},
    ]

    table = run_ops(settings, "handlers", "list", "--type", "market_data")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    old = next(line for line in lines if "desk-old" in line)
    assert ticks[2] in old and " 17 " in old and "yes" in old and "- (free)" in old
    live_line = next(line for line in lines if "desk-live" in line)
    assert ticks[14] in live_line and "host-7" in live_line
    assert "order" not in table.stdout


async def test_forget_without_yes_shows_what_it_would_do_and_changes_nothing(
    settings: Settings, redis_client: Redis
) -> None:
    await desks(redis_client)
    before = await state_of(redis_client, "desk-old")

    refused = run_ops(settings, "handlers", "forget", "desk-old")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "without --yes" in one_error_line(refused.stderr)
    assert ("would forget app desk-old for market_data, order: it holds back 15 log entries "
            "only it keeps (20 it never finished)") in refused.stdout
    assert await state_of(redis_client, "desk-old") == before

    declined = run_ops(settings, "handlers", "forget", "desk-old", stdin="n\n", terminal=True)
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert "Forget app 'desk-old' for market_data, order" in declined.stdout
    assert await state_of(redis_client, "desk-old") == before

    trail = await records(redis_client)
    assert [(r.action, r.outcome) for r in trail] == [("handlers forget", "refused")] * 2
    assert trail[0].counts == {"types": 2, "lag": 20, "held_back": 15, "forgotten": 0}
    assert trail[0].args["app_id"] == "desk-old"


async def test_forget_lets_retention_trim_past_where_the_retired_app_held_the_log(
    settings: Settings, redis_client: Redis
) -> None:
    ticks, _orders = await desks(redis_client)
    retention = Retention(redis_client, "test", max_age_s={}, max_entries={"market_data": 2},
                          event_types=("market_data",), dedupe_window_s=3600.0)

    held = (await retention.round())["market_data"]
    assert held.held_by == "handler group desk-old" and held.removed == 3
    assert (await redis_client.xrange(TICKS, count=1))[0][0].decode() == ticks[3]
    live_before = await state_of(redis_client, "desk-live")

    done = run_ops(settings, "handlers", "forget", "desk-old", "--type", "market_data", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "forgot app 'desk-old' for market_data" in done.stdout
    after = await state_of(redis_client, "desk-old")
    assert after["followers"] == {"market_data": False, "order": True}
    assert b"market_data" not in after["cursor"] and b"order" in after["cursor"]
    assert b"market_data" not in after["acked"] and b"order" in after["acked"]
    assert after["done"]["market_data"] == {} and after["done"]["order"]
    assert await state_of(redis_client, "desk-live") == live_before

    trimmed = (await retention.round())["market_data"]
    assert trimmed.held_by == "handler group desk-live"
    assert trimmed.removed == 12  # up to the live desk's cursor, past where desk-old held it
    assert (await redis_client.xrange(TICKS, count=1))[0][0].decode() == ticks[15]

    trail = await records(redis_client)
    assert [(r.action, r.outcome, r.counts) for r in trail] == [
        ("handlers forget", "done", {"types": 1, "lag": 17, "held_back": 12, "forgotten": 1})]
    assert trail[0].command == "silvertine handlers forget desk-old --type market_data --yes"
    assert trail[0].args["types"] == ["market_data"]

    # Started again later, the app registers afresh and starts at what the log still holds.
    back = GroupPosition(redis_client, "desk-old", "desk-old-worker")
    await back.follow("market_data")
    assert await back.cursor("market_data") == "0-0"
    assert await back.lag("market_data") == await redis_client.xlen(TICKS) == 5
    again = (await retention.round())["market_data"]
    assert again.held_by == "handler group desk-old" and again.removed == 0

    gone = run_ops(settings, "handlers", "forget", "nobody", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert "nothing to forget" in gone.stdout and "desk-live, desk-old" in gone.stdout


async def test_forget_is_refused_while_a_worker_holds_the_app_s_lease(
    settings: Settings, redis_client: Redis
) -> None:
    await desks(redis_client)
    running = GroupPosition(redis_client, "desk-old", "host-9", lease_ms=60_000)
    assert await running.hold()
    before = await state_of(redis_client, "desk-old")

    refused = run_ops(settings, "handlers", "forget", "desk-old", "--yes")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = one_error_line(refused.stderr)
    assert "handler group is running" in line and "held by host-9" in line
    assert await state_of(redis_client, "desk-old") == before

    # The script checks the lease again, atomically with the removal.
    with pytest.raises(HandlerGroupRunning) as caught:
        await forget(redis_client, "desk-old")
    assert caught.value.holder == "host-9"
    assert await state_of(redis_client, "desk-old") == before
    assert await redis_client.get(handler_lease("desk-old")) == b"host-9"

    (record,) = await records(redis_client)
    assert (record.action, record.outcome) == ("handlers forget", "refused")
    assert "held by host-9" in record.reason
    assert record.counts == {"types": 2, "lag": 20, "held_back": 15, "forgotten": 0}

    await running.release()
    done = await forget(redis_client, "desk-old")
    assert (done.types, done.unfollowed) == (["market_data", "order"], 2)
    assert await state_of(redis_client, "desk-old") == {
        "followers": {"market_data": False, "order": False}, "cursor": {}, "acked": {},
        "done": {"market_data": {}, "order": {}}}
