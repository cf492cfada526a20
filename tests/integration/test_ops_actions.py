"""Operator actions are confirmed and audited, end to end on the embedded stack.

``dlq purge``, ``dlq requeue``, ``rewind`` and ``replay --to topic:|handlers``
run as a user would (``python -m silvertine_streams``): without ``--yes`` and
without a terminal they are refused in one line with exit status 2 and change
nothing; at a terminal they ask; every run leaves exactly one record in
``ops:actions`` with the right counts and outcome, and ``silvertine audit
--actions`` lists them.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from silvertine_streams.events import OrderEvent, OrderSide, content_fingerprint, encode_event
from silvertine_streams.kafka.publisher import Publisher
from silvertine_streams.ops.actions import ActionRecord, list_actions, operator
from silvertine_streams.settings import Settings
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.topics import (
    DLQ_STREAM,
    EVENT_TYPES,
    OPS_ACTIONS,
    event_topic,
    ingress_stream,
)
from tests.ops_support import run_ops

pytestmark = pytest.mark.integration

BAD_PRICE = b'{"event_type":"market_data","event_id":"neg-1","symbol":"AAPL","price":-1.0}'
BAD_ORDER = b'{"event_type":"order","event_id":"bad-o","order_id":"o","symbol":"X","quantity":0}'


async def dead_letters(redis: Redis, *payloads: bytes) -> None:
    await DeadLetterSink(redis).write(
        [DeadLetter(p, "invalid: test", f"t/0/{i}") for i, p in enumerate(payloads)])


async def records(redis: Redis) -> list[ActionRecord]:
    """Every recorded action, oldest first."""
    return (await list_actions(redis, limit=None))[::-1]


def refusal_line(stderr: str) -> str:
    """The one error line (a preview of what would be done may come before it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("silvertine:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def later() -> str:
    return (datetime.now(UTC) + timedelta(seconds=5)).isoformat()


async def test_dlq_purge_and_requeue_need_yes_without_a_terminal_and_are_recorded(
    settings: Settings, redis_client: Redis
) -> None:
    await dead_letters(redis_client, BAD_PRICE, BAD_ORDER)

    refused = run_ops(settings, "dlq", "purge", "--before", later())
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = refusal_line(refused.stderr)
    assert "refusing to delete 2 dead letter(s)" in line and "without --yes" in line
    assert await redis_client.xlen(DLQ_STREAM) == 2

    refused = run_ops(settings, "dlq", "requeue", "--all")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "without --yes" in refusal_line(refused.stderr)
    assert "would requeue 2 dead letter(s): 1 to events:market_data, 1 to events:order" \
        in refused.stdout
    assert await redis_client.xlen(DLQ_STREAM) == 2
    assert [await redis_client.xlen(ingress_stream(t)) for t in EVENT_TYPES] == [0] * 5

    done = run_ops(settings, "dlq", "requeue", "--all", "--yes")
    assert done.returncode == 0, done.stderr
    assert "2 requeued, 0 kept, 0 missing" in done.stdout
    assert await redis_client.xlen(ingress_stream("order")) == 1

    await dead_letters(redis_client, BAD_PRICE)
    done = run_ops(settings, "dlq", "purge", "--before", later(), "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 dead letter(s)" in done.stdout
    assert await redis_client.xlen(DLQ_STREAM) == 0

    trail = await records(redis_client)
    assert [(r.action, r.outcome) for r in trail] == [
        ("dlq purge", "refused"), ("dlq requeue", "refused"),
        ("dlq requeue", "done"), ("dlq purge", "done")]
    assert trail[0].counts == {"matched": 2, "purged": 0}
    assert "without --yes" in trail[0].reason
    assert trail[1].counts == {"matched": 2, "missing": 0}
    assert trail[2].counts == {"matched": 2, "requeued": 2, "kept": 0, "missing": 0}
    assert trail[3].counts == {"matched": 1, "purged": 1}
    assert trail[3].reason == ""
    user, host, _ = operator()
    assert all((r.user, r.host) == (user, host) == (user, socket.gethostname()) for r in trail)
    assert trail[2].command == "silvertine dlq requeue --all --yes"
    assert trail[2].args["everything"] is True
    assert all(r.pid > 0 and r.duration_s >= 0 for r in trail)


async def test_at_a_terminal_the_command_asks_and_the_answer_is_recorded(
    settings: Settings, redis_client: Redis
) -> None:
    await dead_letters(redis_client, BAD_PRICE, BAD_ORDER)

    declined = run_ops(settings, "dlq", "purge", "--before", later(), stdin="n\n", terminal=True)
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert "Delete 2 dead letter(s)" in declined.stdout
    assert await redis_client.xlen(DLQ_STREAM) == 2

    agreed = run_ops(settings, "dlq", "purge", "--before", later(), "--reason", "invalid",
                     stdin="y\n", terminal=True)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "deleted 2 dead letter(s)" in agreed.stdout
    assert await redis_client.xlen(DLQ_STREAM) == 0

    trail = await records(redis_client)
    assert [(r.outcome, r.reason, r.counts) for r in trail] == [
        ("refused", "declined: nothing was changed", {"matched": 2, "purged": 0}),
        ("done", "", {"matched": 2, "purged": 2})]


async def test_rewind_needs_yes_and_records_the_partitions_it_moved(
    pipeline_settings: Settings, redis_client: Redis
) -> None:
    async with Publisher(pipeline_settings) as publisher:
        for i in range(6):
            await publisher.publish(OrderEvent(order_id=f"r-{i}", symbol=("AAPL", "MSFT")[i % 2],
                                               side=OrderSide.BUY, quantity=1, source="oms"))
    partitions = [TopicPartition(event_topic(t), p) for t in EVENT_TYPES
                  for p in range(pipeline_settings.partitions)]

    refused = run_ops(pipeline_settings, "rewind", "--to", "earliest")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "without --yes" in refusal_line(refused.stderr)
    assert "dry run" in refused.stdout  # what it would do
    assert set((await committed(pipeline_settings, partitions)).values()) == {None}

    done = run_ops(pipeline_settings, "rewind", "--to", "earliest", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set((await committed(pipeline_settings, partitions)).values()) == {0}
    messages = sum((await end_offsets(pipeline_settings, partitions)).values())
    assert messages >= 1  # the publisher may batch events into envelopes

    dry = run_ops(pipeline_settings, "rewind", "--to", "latest", "--dry-run")
    assert dry.returncode == 0, dry.stderr  # a dry run needs no --yes and is not recorded

    trail = await records(redis_client)
    assert [(r.action, r.outcome) for r in trail] == [("rewind", "refused"), ("rewind", "done")]
    expected = {"partitions": len(partitions), "moved": len(partitions), "to_reprocess": messages,
                "skipped": 0, "removed_members": 0}
    assert trail[0].counts == trail[1].counts == expected
    assert trail[1].args["group"] == pipeline_settings.app_id
    assert trail[1].args["to"] == "earliest"


async def test_replay_to_a_topic_or_handlers_needs_yes_and_named_handlers(
    pipeline_settings: Settings, redis_client: Redis
) -> None:
    from tests.handler_fixtures import SEEN_STREAM

    orders = [OrderEvent(order_id=f"h-{i}", symbol="AAPL", side=OrderSide.BUY, quantity=1,
                         source="oms", sequence=i + 1) for i in range(5)]
    await CanonicalLogSink(redis_client, "order").write(
        [LogRecord(e.event_id, content_fingerprint(e), encode_event(e), f"t/0/{i}#0")
         for i, e in enumerate(orders)])
    fast = pipeline_settings.model_copy(update={"handler_timeout_s": 0.05})

    refused = run_ops(fast, "replay", "--type", "order", "--to", "topic:replay.audit")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "without --yes" in refusal_line(refused.stderr)
    assert "would replay log:order (5 entries" in refused.stderr
    assert "replay.audit" not in await topics(pipeline_settings)

    unnamed = run_ops(fast, "replay", "--type", "order", "--to", "handlers", "--yes")
    assert unnamed.returncode == 2, unnamed.stdout + unnamed.stderr
    assert "--to handlers needs --handlers" in refusal_line(unnamed.stderr)
    assert await redis_client.xlen(SEEN_STREAM) == 0

    refused = run_ops(fast, "replay", "--type", "order", "--to", "handlers",
                      "--handlers", "tests.handler_fixtures:setup")
    assert refused.returncode == 2
    assert await redis_client.xlen(SEEN_STREAM) == 0

    sent = run_ops(fast, "replay", "--type", "order", "--to", "topic:replay.audit", "--yes",
                   "--no-progress")
    assert sent.returncode == 0, sent.stderr
    assert sorted(await replayed_into(pipeline_settings, "replay.audit", len(orders))) == \
        sorted(e.event_id for e in orders)

    handled = run_ops(fast, "replay", "--type", "order", "--to", "handlers", "--handlers",
                      "tests.handler_fixtures:setup", "--yes", "--no-progress")
    assert handled.returncode == 0, handled.stderr
    assert await redis_client.xlen(SEEN_STREAM) == len(orders)

    printed = run_ops(fast, "replay", "--type", "order")
    assert printed.returncode == 0  # --to print only reads: no --yes, no record

    trail = await records(redis_client)
    assert [(r.action, r.outcome) for r in trail] == [
        ("replay", "refused"), ("replay", "refused"), ("replay", "refused"),
        ("replay", "done"), ("replay", "done")]
    assert trail[1].counts == {}
    assert trail[3].counts == {"replayed": 5, "filtered": 0, "undecodable": 0}
    assert trail[3].args["target"] == "topic:replay.audit"
    assert trail[4].counts["replayed"] == 5
    # record handled each event; explode and hang failed until their circuits opened.
    assert trail[4].counts["handler_calls"] >= 5 + 2
    assert trail[4].counts["handler_failures"] >= 2
    assert trail[4].args["handler_spec"] == "tests.handler_fixtures:setup"


async def test_audit_actions_lists_the_trail_newest_first(
    settings: Settings, redis_client: Redis
) -> None:
    secret_url = "redis://ops:hunter2@127.0.0.1:1/0"
    await dead_letters(redis_client, BAD_PRICE)
    run_ops(settings, "dlq", "purge", "--before", later(), "--reason", secret_url)
    run_ops(settings, "dlq", "requeue", "--all", "--yes")
    assert await redis_client.xlen(OPS_ACTIONS) == 2

    listed = run_ops(settings, "audit", "--actions", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("dlq requeue", "done"), ("dlq purge", "done")]
    assert rows[0]["counts"]["requeued"] == 1
    assert rows[1]["counts"] == {"matched": 0, "purged": 0}
    assert "hunter2" not in listed.stdout and "ops:***@" in rows[1]["args"]["reason"]
    stored: Any = await redis_client.xrange(OPS_ACTIONS)
    assert not any(b"hunter2" in value for _, fields in stored for value in fields.values())

    table = run_ops(settings, "audit", "--actions")
    assert table.returncode == 0, table.stderr
    assert "dlq requeue" in table.stdout and "dlq purge" in table.stdout
    assert f"{operator()[0]}@{operator()[1]}" in table.stdout

    assert len(json_lines(run_ops(settings, "audit", "--actions", "--json", "--limit", "1"))) == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert json_lines(run_ops(settings, "audit", "--actions", "--json", "--since", future)) == []

    neither = run_ops(settings, "audit")
    assert neither.returncode == 2 and "EVENT_ID or --actions" in neither.stderr


def json_lines(done: Any) -> list[Any]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


async def committed(settings: Settings, partitions: list[TopicPartition]
                    ) -> dict[TopicPartition, int | None]:
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             group_id=settings.app_id, enable_auto_commit=False)
    await probe.start()
    try:
        return {tp: await probe.committed(tp) for tp in partitions}
    finally:
        await probe.stop()


async def end_offsets(settings: Settings, partitions: list[TopicPartition]
                      ) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


async def topics(settings: Settings) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def replayed_into(settings: Settings, topic: str, expected: int) -> list[str]:
    """The event ids in ``topic`` (read until ``expected`` arrived, or for 20 s)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    ids: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while len(ids) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            ids.extend(json.loads(r.value or b"{}")["event_id"]
                       for records in batch.values() for r in records)
    finally:
        await consumer.stop()
    return ids
