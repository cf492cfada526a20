"""``EventProcessor``: the whole pipeline in one process, from Redis ingress, without Kafka.

It reads the ingress streams ``events:<type>`` with the ingress consumer group
and gives every entry the treatment a worker gives a Kafka message — the same
:class:`~silvertine_streams.agents.pipeline.EventPipeline` (decode + validate,
dead letters with a reason, the reorder window and sequence check, the
idempotent canonical-log sink, gap reports) — then publishes what the log
accepted on an :class:`~silvertine_streams.handlers.EventBus`, and only then
acknowledges (and deletes) the ingress entries.

* **No Kafka.** Dead letters go to the Redis ``dlq`` only; system events (gap
  reports) are written to ``log:system`` through the same log sink, and what
  it accepts is published on the bus too.
* **Once.** An entry redelivered after a crash before its acknowledgement is
  run again; the log answers "duplicate" for its events and they are not
  published again. The bus is in memory: what a crash catches between the log
  write and the handlers is not delivered again (run workers, whose handler
  group follows the log from a durable cursor, when handlers must see every
  event across crashes).
* **Restart.** On start the processor first takes over every entry of the
  group read but never acknowledged (its own from a previous run, or those of
  one that crashed), as the ingress mirror does, then reads new ones.
* **Checkpoints.** Every ``checkpoint_interval`` seconds, and at :meth:`stop`,
  it saves each type's durable sequence marks with the log entry they are
  complete up to (``processor:<group>:checkpoint``). A start loads them and
  rolls them forward over the log entries written since, so a crash loses no
  mark; the interval bounds how much log a start re-reads.
* **Bounds.** The logs' retention and the DLQ's bound apply as in a worker
  (the same settings, the same lease: one trimmer at a time).
* **One reader per ingress stream.** Workers' ingress mirrors read the same
  streams with the same group; two readers would split a symbol's entries. So
  the processor holds each type's ingress lease (``lease:events:<type>``, the
  mirrors' own) while it reads, and waits, with a warning naming the holder,
  while a mirror or another processor has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from silvertine_streams.agents.composition import replica_wait
from silvertine_streams.agents.outbox import Outbox
from silvertine_streams.agents.pipeline import EventPipeline, Incoming, PartitionState
from silvertine_streams.agents.policies import pipeline_policies
from silvertine_streams.domain.business_keys import business_key
from silvertine_streams.domain.sequencing import stream_key
from silvertine_streams.events import (
    EventType,
    SystemEvent,
    content_fingerprint,
    encode_event,
)
from silvertine_streams.handlers.bus import EventBus
from silvertine_streams.handlers.recent import RecentlyLogged
from silvertine_streams.observability.metrics import TypeMetrics
from silvertine_streams.redis.lease import Lease
from silvertine_streams.redis.streams import IngressEntry, RedisStreamManager
from silvertine_streams.replay.reader import following_id, log_bounds, read_pages
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord, WriteStatus
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.sinks.retention import Retention
from silvertine_streams.topics import (
    EVENT_TYPES,
    INGRESS_GROUP,
    ingress_lease,
    ingress_stream,
    processor_checkpoint,
)

__all__ = ["EventProcessor"]

log = logging.getLogger(__name__)

LEASE_MS = 5000
"""How long an ingress lease lasts without renewal (as a worker's mirror holds it)."""

SYSTEM_ORIGIN = "silvertine.processor"
"""The ``origin`` of system events the processor writes to ``log:system`` itself."""


@dataclass(slots=True)
class _Lane:
    """One event type: its pipeline, the sequence state of its stream, what to acknowledge."""

    event_type: str
    pipeline: EventPipeline
    state: PartitionState
    acked: list[str] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)
    """Entries whose events are in the pipeline (held for a sequence): never offered twice."""
    task: asyncio.Task[None] | None = None
    lease: Lease | None = None
    """The type's ingress lease, the one a worker's mirror takes: never both at once."""


class EventProcessor:
    """Runs the engine's pipeline on the Redis ingress streams and publishes on a bus.

    Args:
        redis_manager: the connection (connected by :meth:`start` if it is not);
            its settings give the per-type policies, as a worker's do.
        event_bus: where logged events are published (started by :meth:`start`
            if it is not running, and then stopped by :meth:`stop`).
        consumer_name: this processor's name in the ingress group (default
            ``processor-<host>``, the same across restarts).
        batch_size: entries read per stream per round; each round is one log
            write and one acknowledgement.
        checkpoint_interval: seconds between checkpoints of the sequence marks.
        event_types: the types to process (default: all).
        block_ms: how long one read waits for entries; also how soon
            :meth:`stop` is noticed and held events are released.
        dedupe_window_s: how long, at least, the log catches a duplicate id
            (default: the settings' ``dedupe_window_s``, as the workers').
    """

    def __init__(
        self,
        redis_manager: RedisStreamManager,
        event_bus: EventBus,
        consumer_name: str | None = None,
        batch_size: int = 100,
        checkpoint_interval: float = 60.0,
        *,
        event_types: Sequence[EventType | str] | None = None,
        block_ms: int = 100,
        dedupe_window_s: float | None = None,
    ) -> None:
        if batch_size < 1 or checkpoint_interval <= 0 or block_ms < 1:
            raise ValueError("batch_size and block_ms must be >= 1 and checkpoint_interval > 0, "
                             f"got {batch_size}, {block_ms}, {checkpoint_interval}")
        self.manager = redis_manager
        self.bus = event_bus
        self.consumer_name = consumer_name or f"processor-{socket.gethostname()}"
        self.batch_size = batch_size
        self.checkpoint_interval = checkpoint_interval
        names = [t.value if isinstance(t, EventType) else EventType(t).value
                 for t in (event_types or EVENT_TYPES)]
        self.event_types = tuple(t for t in EVENT_TYPES if t in names)
        self.block_ms = block_ms
        self._window_s = (dedupe_window_s if dedupe_window_s is not None
                          else redis_manager.settings.dedupe_window_s)
        self._lanes: dict[str, _Lane] = {}
        self._logged = RecentlyLogged(lambda _type: True, capacity=1 << 62)
        self._logged.active = True
        self._sinks: dict[str, CanonicalLogSink] = {}
        self._dead_letters: DeadLetterSink | None = None
        self._stopping = asyncio.Event()
        self._checkpointer: asyncio.Task[None] | None = None
        self._retention: Retention | None = None
        self._retainer: asyncio.Task[None] | None = None
        self._started_bus = False
        self._running = False
        self.processed = 0
        """Ingress entries handled and acknowledged so far."""

    @property
    def running(self) -> bool:
        """Whether the processor reads the ingress streams."""
        return self._running

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Build the pipelines, restore the sequence marks, start reading; a no-op if running."""
        if self._running:
            return
        await self.manager.connect()
        if not self.bus.running:
            await self.bus.start()
            self._started_bus = True
        redis = self.manager.redis
        settings = self.manager.settings
        retry_max_s = settings.sink_retry_max_s
        replicas = replica_wait(settings)
        self._dead_letters = DeadLetterSink(redis, retry_max_s=retry_max_s,
                                            max_len=settings.dlq_max_len, replica_wait=replicas)
        outbox = Outbox(self._dead_letters, self._log_system, _no_kafka_copy)
        for name in (*self.event_types, "system"):
            self._sinks.setdefault(name, CanonicalLogSink(redis, name, window_s=self._window_s,
                                                          retry_max_s=retry_max_s,
                                                          replica_wait=replicas))
        policies = pipeline_policies(settings)
        await self.manager.ensure_groups(self.event_types)
        saved = await self._load_checkpoints()
        for name in self.event_types:
            # Awaited one by one: each write is durable before the next is sent.
            policy = dataclasses.replace(policies[name], overlap_writes=False)
            pipeline = EventPipeline(EventType(name), policy, self._sinks[name], outbox,
                                     metrics=TypeMetrics.for_type(name), recent=self._logged)
            marks = await self._restore_marks(name, saved.get(name))
            state = pipeline.partition(0, partial(dict, marks))
            self._lanes[name] = _Lane(name, pipeline, state, lease=Lease(
                redis, ingress_lease(name), self.consumer_name, LEASE_MS))
        self._stopping.clear()
        self._running = True
        for lane in self._lanes.values():
            lane.task = asyncio.create_task(self._run(lane),
                                            name=f"silvertine-processor-{lane.event_type}")
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(),
                                                 name="silvertine-processor-checkpoints")
        # The logs' and the DLQ's bounds, as a worker keeps them (under the same lease).
        self._retention = Retention(
            redis, self.consumer_name, max_age_s=settings.log_retention,
            max_entries=settings.log_max_entries, event_types=EVENT_TYPES,
            dedupe_window_s=self._window_s, interval_s=settings.retention_interval_s)
        self._retainer = asyncio.create_task(self._retention.run(),
                                             name="silvertine-processor-retention")

    async def stop(self) -> None:
        """Finish the round in flight, save a checkpoint, and stop; a no-op if not running.

        Events held in a reorder window stay unacknowledged in the ingress
        group: the next start runs them again. Stops the bus if :meth:`start`
        started it (which delivers what it has queued).
        """
        if not self._running:
            return
        self._stopping.set()
        if self._retention is not None:
            self._retention.stop()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if self._retainer is not None:
            tasks.append(self._retainer)
        if self._checkpointer is not None:
            tasks.append(self._checkpointer)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        self._running = False
        for lane in self._lanes.values():
            if lane.lease is not None:
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                    await lane.lease.release()  # it expires otherwise
        try:
            await self.checkpoint()
        finally:
            self._lanes.clear()
            self._checkpointer = self._retention = self._retainer = None
            if self._started_bus:
                self._started_bus = False
                await self.bus.stop()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result,
                                                                    asyncio.CancelledError):
                raise result

    async def __aenter__(self) -> EventProcessor:
        """Start."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop."""
        await self.stop()

    # ------------------------------------------------------------------ the loop

    async def _run(self, lane: _Lane) -> None:
        """Read and handle rounds until :meth:`stop`; Redis outages are waited out."""
        manager = self.manager
        name = lane.event_type
        # First (and after an outage): what was read but never acknowledged.
        take_over: str | None = "0-0"
        delay = 0.05
        warned = False
        while not self._stopping.is_set():
            try:
                assert lane.lease is not None
                if not await lane.lease.hold():
                    # A worker's ingress mirror (or another processor) reads this
                    # stream: two readers of one group would split its events.
                    if not warned:
                        warned = True
                        log.warning("processor %s: %s is held by %r; waiting for it "
                                    "(stop the workers' mirrors or the other processor)",
                                    name, lane.lease.key,
                                    await manager.redis.get(lane.lease.key))
                    take_over = "0-0"
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), LEASE_MS / 3000)
                    continue
                warned = False
                if take_over is not None:
                    entries, cursor = await manager.claim_pending(
                        name, self.consumer_name, self.batch_size, take_over)
                    take_over = None if cursor == "0-0" else cursor
                else:
                    entries = await manager.read_entries([name], self.consumer_name,
                                                         self.block_ms, self.batch_size)
                await self._handle(lane, entries)
                delay = 0.05
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("processor %s waiting for Redis: %s", name, exc)
                take_over = "0-0"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 2.0)

    async def _handle(self, lane: _Lane, entries: list[IngressEntry]) -> None:
        """One round: the pipeline, the bus, then the acknowledgements."""
        pipeline = lane.pipeline
        async with pipeline.lock:
            letters: list[DeadLetter] = []
            messages: list[Incoming] = []
            for entry in entries:
                if entry.message_id in lane.in_flight:
                    continue  # taken over again while its events wait in the reorder window
                if entry.payload is None:
                    letters.append(DeadLetter(b"", "invalid: ingress entry has no 'event' field",
                                              entry.origin))
                    lane.acked.append(entry.message_id)
                    continue
                lane.in_flight.add(entry.message_id)
                messages.append(Incoming(entry.payload, lane.state, 0, 0,
                                         partial(_acknowledged, lane, entry.message_id),
                                         entry.received_s, entry.origin))
            if letters:
                assert self._dead_letters is not None
                await self._dead_letters.write(letters)
            if messages:
                await pipeline.process_batch(messages)
            for state in pipeline.due_partitions(time.monotonic()):
                await pipeline.expire(state)
            # Durable now (logged or dead-lettered): handlers next, acknowledgements last.
            for event in self._logged.drain():
                await self.bus.publish(event)
            acked, lane.acked = lane.acked, []
            if acked:
                await self.manager.acknowledge_events(ingress_stream(lane.event_type), acked)
                self.processed += len(acked)

    async def _log_system(self, event: SystemEvent) -> None:
        """The outbox's way out for system events: ``log:system``, then the bus."""
        record = LogRecord(event.event_id, content_fingerprint(event), encode_event(event),
                           SYSTEM_ORIGIN, business_key(event))
        [status] = await self._sinks["system"].write([record])
        if status is WriteStatus.WRITTEN:
            await self.bus.publish(event)

    # ------------------------------------------------------------------ checkpoints

    async def checkpoint(self) -> None:
        """Save every type's durable sequence marks with the log entry they are complete up to."""
        redis = self.manager.redis
        values: dict[str, str] = {}
        for name, lane in self._lanes.items():
            async with lane.pipeline.lock:  # no write of this type in flight
                _, _, last_id = await log_bounds(redis, name)
                values[name] = json.dumps({"marks": dict(lane.state.durable_marks),
                                           "log_id": last_id})
        if values:
            await redis.hset(processor_checkpoint(INGRESS_GROUP), mapping=values)  # type: ignore[arg-type]  # redis-py's mapping stub is invariant

    async def _checkpoint_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.checkpoint_interval)
            if self._stopping.is_set():
                return
            try:
                await self.checkpoint()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("processor checkpoint skipped: %s", exc)

    async def _load_checkpoints(self) -> dict[str, dict[str, object]]:
        raw = await self.manager.redis.hgetall(processor_checkpoint(INGRESS_GROUP))
        saved: dict[str, dict[str, object]] = {}
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            saved[name] = json.loads(value)
        return saved

    async def _restore_marks(self, name: str, saved: dict[str, object] | None) -> dict[str, int]:
        """The checkpoint's marks, rolled forward over the log entries written after it."""
        marks: dict[str, int] = {}
        start = "-"
        if saved is not None:
            stored = saved.get("marks")
            if isinstance(stored, dict):
                marks = {str(k): int(v) for k, v in stored.items()}
            log_id = saved.get("log_id")
            if isinstance(log_id, str):
                start = following_id(log_id)
        async for page in read_pages(self.manager.redis, name, start, "+"):
            for event in page.events:
                sequence = event.sequence
                if sequence is None:
                    continue
                key = stream_key(event.source, event.partition_key)
                known = marks.get(key)
                if known is None or sequence > known:
                    marks[key] = sequence
        return marks


def _acknowledged(lane: _Lane, message_id: str) -> None:
    """A message's events are all durable: acknowledge its entry after this round."""
    lane.in_flight.discard(message_id)
    lane.acked.append(message_id)


async def _no_kafka_copy(letters: Sequence[DeadLetter]) -> None:
    """Processor mode has no Kafka ``silvertine.dlq``: the Redis ``dlq`` is the record."""
