"""Rewind the workers' consumer group to a time: reprocess from there on the next start.

``rewind_group(settings, to)`` sets the committed offsets of the group
``SILVERTINE_APP_ID`` on the ``silvertine.<type>`` topics to ``earliest``,
``latest``, or the first message at or after a timestamp. Reprocessing is safe
for the canonical log as long as the reprocessed events are inside the dedupe
window (the log's id index drops them as duplicates); a rewind further back
than ``SILVERTINE_DEDUPE_WINDOW_S`` is refused unless asked for explicitly.

**Workers must be stopped.** A live member would overwrite the offsets with its
next commit, and brokers refuse an outside commit while the group has members.
Two facts about the embedded broker shape the check (measured on Tansu 0.6.0):

* Tansu numbers a group's first generation 0, and aiokafka sends LeaveGroup
  only for generations > 0, so a worker that ran alone stays listed as a member
  after it stopped; Tansu does not expire it while nobody else talks to the
  group. Apache Kafka drops such a member on LeaveGroup or after the session
  timeout.
* So a listed member is not proof of a running worker. The workers' liveness
  signal is the ingress mirror's Redis lease (``lease:events:<type>``): a
  running worker renews one every ~100 ms or tries to take a free one every
  ~1.7 s (see :func:`live_lease_holders`). When none is renewed or taken, the
  listed members are leftovers and are removed (LeaveGroup on their behalf)
  before the commit; when one is, the rewind is refused. Right after workers
  stop this takes up to ~7 s (their leases must expire first).

**Offsets for a timestamp.** Tansu's ListOffsets-by-time is wrong in two ways:
a time after the last message answers offset 0 (Kafka answers "none", i.e.
the end), and it matches against the broker's receive time, not the records'
own timestamps. Every answer is therefore verified against the records around
it (one or two fetches), and a wrong one is replaced by a binary search over
the partition's record timestamps (log2(n) fetches). On Apache Kafka the
broker's answer passes the check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

from silvertine_streams.errors import ActionRefused, ServerUnavailable
from silvertine_streams.kafka.clients import kafka_admin, kafka_consumer
from silvertine_streams.redis.clients import redis_client
from silvertine_streams.replay.reader import datetime_to_ms
from silvertine_streams.replay.where import parse_timestamp
from silvertine_streams.settings import Settings
from silvertine_streams.topics import EVENT_TYPES, event_topic, ingress_lease

RewindTarget = datetime | Literal["earliest", "latest"]

MIRROR_LEASE_MS = 5000
"""The ingress mirror's lease time (``IngressMirror(lease_ms=...)``, 5 s by default)."""
FETCH_TIMEOUT_MS = 5000


class RewindRefused(ActionRefused):
    """The rewind was not done; the message says why and what to do."""


class WorkersRunning(RewindRefused):
    """Workers of the group are running.

    Attributes:
        group: the consumer group.
        members: member ids the broker lists.
        holders: worker names holding an ingress lease (``host-pid``).
    """

    def __init__(self, group: str, members: Sequence[str], holders: Sequence[str],
                 detail: str = "") -> None:
        self.group = group
        self.members = list(members)
        self.holders = list(holders)
        who = f" (running: {', '.join(holders)})" if holders else ""
        super().__init__(
            f"refusing to rewind group {group!r}: workers are running{who}; "
            f"{len(members)} member(s) listed by the broker. Stop every `silvertine worker` "
            f"of SILVERTINE_APP_ID={group} and run the rewind again.{detail}"
        )


@dataclass(frozen=True, slots=True)
class PartitionRewind:
    """The rewind of one partition.

    Attributes:
        topic: the topic.
        partition: the partition.
        committed: the group's committed offset before (None = never committed).
        target: the offset committed (or that would be, in a dry run).
        beginning: the first offset the broker holds.
        end: the offset after the last message.
        method: how ``target`` was found.
        first_timestamp_ms: timestamp of the message at ``target`` (None at the end).
    """

    topic: str
    partition: int
    committed: int | None
    target: int
    beginning: int
    end: int
    method: str
    first_timestamp_ms: int | None = None

    @property
    def to_reprocess(self) -> int:
        """Messages the workers will read again (or newly) from ``target``."""
        return self.end - self.target

    @property
    def skipped(self) -> int:
        """Messages never processed that the new offset jumps over."""
        start = self.committed if self.committed is not None else self.beginning
        return max(0, self.target - start)


@dataclass(slots=True)
class RewindPlan:
    """What a rewind did (or would do, in a dry run).

    Attributes:
        group: the consumer group.
        target: what was asked (``earliest``, ``latest`` or an ISO time).
        partitions: one row per partition.
        removed_members: leftover members removed before the commit.
        notes: things a person should know (e.g. a broker answer that was corrected).
        committed: False in a dry run.
    """

    group: str
    target: str
    partitions: list[PartitionRewind] = field(default_factory=list)
    removed_members: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    committed: bool = False


def parse_rewind_target(text: str) -> RewindTarget:
    """Parse ``earliest``, ``latest`` or an ISO-8601 time (a time without zone is UTC).

    Raises:
        RewindRefused: anything else.
    """
    word = text.strip().lower()
    if word in ("earliest", "latest"):
        return word  # type: ignore[return-value]  # one of the literals
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise RewindRefused(f"--to {text!r}: use earliest, latest or an ISO time ({exc})") from None


async def rewind_group(
    settings: Settings,
    to: RewindTarget,
    types: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    beyond_dedupe_window: bool = False,
) -> RewindPlan:
    """Reset the group's committed offsets of ``silvertine.<type>`` to ``to``.

    Args:
        settings: ``kafka_url``, ``app_id`` and (for the liveness check)
            ``redis_url``, ``dedupe_window_s``.
        to: ``"earliest"``, ``"latest"`` or an aware datetime.
        types: event types to rewind (default: all).
        dry_run: compute and return the plan; change nothing.
        beyond_dedupe_window: allow reprocessing messages older than the
            dedupe window (events logged that long ago may be logged twice).

    Raises:
        WorkersRunning: workers of the group are running.
        RewindRefused: the rewind would reach beyond the dedupe window, or a
            topic does not exist.
        ServerUnavailable: Kafka (or Redis) did not answer.
    """
    chosen = list(types) if types else list(EVENT_TYPES)
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        raise RewindRefused(f"unknown event type(s) {unknown}; types: {', '.join(EVENT_TYPES)}")
    target_text = to if isinstance(to, str) else to.astimezone(UTC).isoformat()
    plan = RewindPlan(group=settings.app_id, target=target_text)
    admin = kafka_admin(settings, role="rewind")
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        await admin.close()
        raise ServerUnavailable(str(settings.kafka_url), f"Kafka admin: {exc!r}") from exc
    try:
        leftovers = await _check_no_live_workers(settings, admin)
        # Names the group to commit its offsets, never subscribes (does not join);
        # the shortest fetch wait, as the plan fetches single records.
        consumer = kafka_consumer(
            settings, role="rewind", group_id=settings.app_id, fetch_max_wait_ms=10
        )
        try:
            await consumer.start()
        except (KafkaError, OSError) as exc:
            await consumer.stop()
            raise ServerUnavailable(str(settings.kafka_url), repr(exc)) from exc
        try:
            await _plan_partitions(consumer, plan, [event_topic(t) for t in chosen], to)
            _check_dedupe_window(plan, settings.dedupe_window_s, beyond_dedupe_window)
            if dry_run:
                if leftovers:
                    plan.notes.append(
                        f"{len(leftovers)} member(s) left behind by stopped workers would be "
                        "removed from the group first"
                    )
                return plan
            if leftovers:
                await _remove_members(admin, settings.app_id, leftovers)
                plan.removed_members = list(leftovers)
            await _commit(consumer, plan)
        finally:
            await consumer.stop()
    finally:
        await admin.close()
    return plan


# --- is the group idle? ----------------------------------------------------------


async def _check_no_live_workers(settings: Settings, admin: AIOKafkaAdminClient) -> list[str]:
    """Return members the broker lists although no worker runs; raise if workers run."""
    members = await _members(admin, settings.app_id)
    if not members:
        return []
    if settings.redis_url is None:
        raise RewindRefused(
            f"group {settings.app_id!r} lists {len(members)} member(s) and without "
            "SILVERTINE_REDIS_URL the workers' liveness cannot be checked; stop the workers "
            "and wait for the session timeout, or set SILVERTINE_REDIS_URL"
        )
    holders = await live_lease_holders(settings)
    if holders:
        raise WorkersRunning(settings.app_id, members, holders)
    return members


async def _members(admin: AIOKafkaAdminClient, group: str) -> list[str]:
    try:
        described = await admin.describe_consumer_groups([group])
    except KafkaError as exc:
        raise ServerUnavailable("kafka", f"describing group {group!r}: {exc!r}") from exc
    members: list[str] = []
    for response in described:
        for _error, group_id, _state, _ptype, _protocol, group_members, *_ in response.groups:
            if group_id == group:
                members.extend(member[0] for member in group_members)
    return members


async def live_lease_holders(
    settings: Settings,
    lease_ms: int = MIRROR_LEASE_MS,
    poll_s: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Return the workers renewing an ingress-mirror lease; empty once none can be running.

    Every running worker either holds a lease (``SET PX lease_ms``, renewed every
    ~100 ms) or tries to take each free one every ``lease_ms / 3``. So a worker is
    running when, while we watch, a lease's TTL goes up (renewed), its holder
    changes, or a free lease is taken. None is running once every lease has
    expired and stayed free for longer than a taker's retry period; a stopped
    worker's leases expire within ``lease_ms``, so this answers within about
    ``lease_ms + lease_ms / 3`` at worst, and within ~100 ms when workers run.

    Args:
        settings: ``redis_url``, the Redis of the workers' leases.
        lease_ms: the mirror's lease time.
        poll_s: pause between reads of the leases.
        clock: monotonic seconds (a fake in tests).

    Raises:
        ServerUnavailable: Redis did not answer.
    """
    keys = [ingress_lease(t) for t in EVENT_TYPES]
    quiet_needed_s = lease_ms / 3000 + 0.5
    give_up = clock() + 2 * lease_ms / 1000 + quiet_needed_s
    client = redis_client(settings, role="rewind")
    try:
        previous = await _lease_state(client, keys)
        quiet_since: float | None = None
        while clock() < give_up:
            if all(not holder for holder, _ in previous):
                quiet_since = quiet_since if quiet_since is not None else clock()
                if clock() - quiet_since >= quiet_needed_s:
                    return []
            else:
                quiet_since = None
            await asyncio.sleep(poll_s)
            current = await _lease_state(client, keys)
            live = [now_holder for (was_holder, was_ttl), (now_holder, now_ttl)
                    in zip(previous, current, strict=True)
                    if now_holder and (now_holder != was_holder or now_ttl > was_ttl)]
            if live:
                return sorted(set(live))
            previous = current
    except (aioredis.RedisError, OSError) as exc:
        raise ServerUnavailable(
            str(settings.redis_url), f"checking worker leases: {exc!r}"
        ) from exc
    finally:
        await client.aclose()
    return []


async def _lease_state(client: aioredis.Redis, keys: list[str]) -> list[tuple[str, int]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
        pipe.pttl(key)
    replies = await pipe.execute()
    state: list[tuple[str, int]] = []
    for holder, ttl in zip(replies[::2], replies[1::2], strict=True):
        state.append((holder.decode() if isinstance(holder, bytes) else (holder or ""), int(ttl)))
    return state


async def _remove_members(admin: AIOKafkaAdminClient, group: str, members: list[str]) -> None:
    """Send LeaveGroup on behalf of members whose workers are gone (see the module doc)."""
    try:
        node = await admin.find_coordinator(group)
        for member in members:
            # aiokafka has no public call for this; LeaveGroup v0/1 is what
            # kafka-consumer-groups and a departing consumer send.
            await admin._send_request_to_node(node, LeaveGroupRequest(group, member))
    except KafkaError as exc:
        raise ServerUnavailable("kafka", f"removing stale members of {group!r}: {exc!r}") from exc
    remaining = await _members(admin, group)
    if remaining:
        raise WorkersRunning(group, remaining, [], " A member joined while rewinding.")


# --- offsets --------------------------------------------------------------------


async def _plan_partitions(
    consumer: AIOKafkaConsumer, plan: RewindPlan, topics: list[str], to: RewindTarget
) -> None:
    known = await consumer.topics()
    missing = [t for t in topics if t not in known]
    if missing:
        raise RewindRefused(f"topic(s) {', '.join(missing)} do not exist on the broker")
    tps = [TopicPartition(topic, p) for topic in topics
           for p in sorted(consumer.partitions_for_topic(topic) or ())]
    beginning = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    corrected = 0
    for tp in tps:
        committed = await consumer.committed(tp)
        begin_at, end_at = beginning[tp], end[tp]
        if to == "earliest":
            target, method = begin_at, "earliest"
        elif to == "latest":
            target, method = end_at, "latest"
        else:
            assert isinstance(to, datetime)
            target, method = await _offset_for_time(consumer, tp, datetime_to_ms(to),
                                                    begin_at, end_at)
            corrected += method.startswith("searched")
        first_ts = (await _record_at(consumer, tp, target))[1] if target < end_at else None
        plan.partitions.append(PartitionRewind(
            topic=tp.topic, partition=tp.partition, committed=committed, target=target,
            beginning=begin_at, end=end_at, method=method, first_timestamp_ms=first_ts,
        ))
    if corrected:
        plan.notes.append(
            f"the broker's offsets-for-times answer was wrong for {corrected} partition(s) "
            "and was replaced by a search over the records' timestamps"
        )


async def _offset_for_time(
    consumer: AIOKafkaConsumer, tp: TopicPartition, ts_ms: int, begin: int, end: int
) -> tuple[int, str]:
    """Return the first offset whose record timestamp is >= ``ts_ms`` (``end`` if none)."""
    if begin >= end:
        return end, "empty partition"
    answer = (await consumer.offsets_for_times({tp: ts_ms})).get(tp)
    hint = end if answer is None else min(max(answer.offset, begin), end)
    if await _is_first_at_or_after(consumer, tp, hint, ts_ms, begin, end):
        return hint, "broker index (verified)"
    lo, hi = begin, end
    while lo < hi:
        mid = (lo + hi) // 2
        offset, timestamp = await _record_at(consumer, tp, mid)
        if offset >= end or timestamp >= ts_ms:
            hi = mid
        else:
            lo = offset + 1
    return lo, f"searched (broker answered {answer.offset if answer else 'none'})"


async def _is_first_at_or_after(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, ts_ms: int, begin: int, end: int
) -> bool:
    if offset < end and (await _record_at(consumer, tp, offset))[1] < ts_ms:
        return False
    return offset <= begin or (await _record_at(consumer, tp, offset - 1))[1] < ts_ms


async def _record_at(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> tuple[int, int]:
    """Fetch the record at ``offset`` (or the next one there is): ``(offset, timestamp ms)``."""
    if consumer.assignment() != {tp}:
        consumer.assign([tp])
    consumer.seek(tp, offset)
    deadline = time.monotonic() + FETCH_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
        for record in batch.get(tp, []):
            return record.offset, record.timestamp
    raise ServerUnavailable("kafka", f"no record at {tp.topic}/{tp.partition}@{offset} "
                            f"within {FETCH_TIMEOUT_MS} ms")


def _check_dedupe_window(plan: RewindPlan, window_s: float, allowed: bool) -> None:
    oldest = [p.first_timestamp_ms for p in plan.partitions if p.first_timestamp_ms is not None]
    if not oldest:
        return
    age_s = time.time() - min(oldest) / 1000
    if age_s <= window_s:
        return
    message = (
        f"the oldest message to reprocess is {age_s / 3600:.1f} h old, beyond the dedupe window "
        f"SILVERTINE_DEDUPE_WINDOW_S={window_s:g} s: events first logged that long ago are no "
        "longer in the log's id index and would be logged twice"
    )
    if not allowed:
        raise RewindRefused(message + "; pass --beyond-dedupe-window to do it anyway")
    plan.notes.append("WARNING: " + message)


async def _commit(consumer: AIOKafkaConsumer, plan: RewindPlan) -> None:
    offsets = {TopicPartition(p.topic, p.partition): p.target for p in plan.partitions}
    consumer.assign(list(offsets))
    try:
        await consumer.commit(offsets)
    except CommitFailedError as exc:
        raise WorkersRunning(plan.group, [], [], " The broker refused the commit: a member "
                             "joined the group meanwhile.") from exc
    plan.committed = True
