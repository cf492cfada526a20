"""The ingress mirror: Redis ``events:<type>`` → Kafka ``silvertine.<type>``.

Guarantees:
* An entry is acknowledged (XACK, then XDEL) in Redis only after Kafka confirmed
  the envelope that carries it: a crash in between re-sends it, and the
  canonical log's id index absorbs the duplicate.
* Per-symbol order: one worker at a time mirrors a given stream, holding a
  lease (``SET NX PX``) it renews. Several mirrors reading one stream through a
  consumer group would split a symbol's entries between them and race.
* A worker that takes the lease over first re-sends the entries the previous
  holder read but never acknowledged (XAUTOCLAIM), before reading new ones.
* An entry without ``event_id`` / ``timestamp`` gets them derived from its entry
  id, so a re-sent copy is recognised as the same event.
* A graceful stop (:meth:`IngressMirror.stop`) lets the round in flight finish
  (sent and acknowledged) and then deletes the lease if this worker still holds
  it, so another worker takes the stream over at once instead of after
  ``lease_ms``. After a crash the lease simply expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from silvertine_streams.events import (
    Event,
    EventType,
    decode_message,
    encode_event,
    fill_missing_identity,
)
from silvertine_streams.events.codec import MAX_EVENT_BYTES, MAX_MESSAGE_BYTES, PREVIEW_BYTES
from silvertine_streams.kafka.envelopes import Envelope, pack_envelopes
from silvertine_streams.observability.metrics import DEAD_LETTERS
from silvertine_streams.redis.lease import Lease
from silvertine_streams.sinks.dead_letters import DeadLetter, DeadLetterSink
from silvertine_streams.topics import INGRESS_GROUP, ingress_lease, ingress_stream

log = logging.getLogger(__name__)

SendEnvelope = Callable[[Envelope], Awaitable[None]]
"""Send one envelope to (topic, partition) and return once Kafka confirmed it."""

STOP_WAIT_S = 5.0
"""How long :meth:`IngressMirror.stop` waits for the round in flight before cancelling it."""


class IngressMirror:
    """Mirrors one event type's ingress stream into its Kafka topic.

    Args:
        redis: the Redis client.
        event_type: the type whose ``events:<type>`` stream is mirrored.
        send_envelope: sends an envelope to Kafka and waits for the broker.
        dead_letters: where entries that cannot be decoded go (origin = entry id).
        consumer_name: this worker's name in the Redis consumer group.
        partitions: partitions of the topic (routing by murmur2 of the symbol).
        batch_max: entries read per round, and events per envelope at most.
        max_event_bytes: an entry's event over this is a dead letter (``too_large``).
        max_message_bytes: an envelope sent to Kafka is at most this long.
        lease_ms: how long a silent holder keeps the stream.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        event_type: EventType,
        send_envelope: SendEnvelope,
        dead_letters: DeadLetterSink,
        consumer_name: str,
        partitions: int,
        batch_max: int = 500,
        lease_ms: int = 5000,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._redis = redis
        self._type = event_type
        self._stream = ingress_stream(event_type.value)
        self._lease_key = ingress_lease(event_type.value)
        self._send = send_envelope
        self._dead_letters = dead_letters
        self._me = consumer_name
        self._partitions = partitions
        self._batch_max = batch_max
        self._lease_ms = lease_ms
        self._max_event_bytes = max_event_bytes
        self._max_message_bytes = max_message_bytes
        self._lease = Lease(redis, self._lease_key, consumer_name, lease_ms)
        self._holding = False
        self._stopping = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self.mirrored = 0

    async def run(self) -> None:
        """Mirror until :meth:`stop`; Redis outages are waited out, never raised."""
        self._running = asyncio.current_task()
        delay = 0.05
        while not self._stopping.is_set():
            try:
                await self.step()
                delay = 0.05
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._holding = False
                log.warning("ingress mirror %s waiting for Redis: %s", self._stream, exc)
                await self._pause(delay)
                delay = min(delay * 2, 2.0)

    async def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Finish the round in flight, stop, and hand the lease back.

        Entries of a round cut off after ``wait_s`` stay pending in the consumer
        group; the next holder re-sends them (the log absorbs duplicates). The
        lease is deleted only if this mirror still holds it.
        """
        self._stopping.set()
        running = self._running
        if running is not None and running is not asyncio.current_task():
            done, _ = await asyncio.wait({running}, timeout=wait_s)
            if not done:
                log.warning("ingress mirror %s: round still running after %.1fs; cancelled",
                            self._stream, wait_s)
                running.cancel()
                await asyncio.wait({running})
        try:
            released = await self._lease.release()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("ingress mirror %s: lease not released (%s); it expires in %d ms",
                        self._stream, exc, self._lease_ms)
            return
        self._holding = False
        if released:
            log.info("ingress mirror %s: stopped, lease released", self._stream)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if :meth:`stop` is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def step(self, block_ms: int = 100) -> int:
        """Do one round: hold the lease, reclaim or read, send, acknowledge.

        Returns:
            the number of entries handled this round.
        """
        if not await self._lease.hold():
            self._holding = False
            await self._pause(self._lease_ms / 3000)
            return 0
        handled = 0
        if not self._holding:
            await self._ensure_group()
            self._holding = True
            # Entries a dead holder read but never acknowledged go out first.
            while reclaimed := await self._reclaim():
                handled += reclaimed
        entries = await self._read(block_ms)
        return handled + await self._forward(entries)

    async def _ensure_group(self) -> None:
        try:
            # "0": entries added before the group existed are mirrored too.
            await self._redis.xgroup_create(self._stream, INGRESS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _reclaim(self) -> int:
        _, entries, *_ = await self._redis.xautoclaim(
            self._stream, INGRESS_GROUP, self._me, min_idle_time=0, start_id="0-0",
            count=self._batch_max,
        )
        return await self._forward(entries)

    async def _read(self, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        response = await self._redis.xreadgroup(
            INGRESS_GROUP, self._me, {self._stream: ">"}, count=self._batch_max, block=block_ms
        )
        if not response:
            return []
        # RESP2 (our clients' protocol): [[stream, [(id, fields), ...]]].
        entries: list[tuple[bytes, dict[bytes, bytes]]] = response[0][1]  # type: ignore[index,assignment]  # RESP2 shape
        return entries

    async def _forward(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> int:
        if not entries:
            return 0
        events: list[Event] = []
        letters: list[DeadLetter] = []
        for entry_id, fields in entries:
            origin = f"{self._stream}/{entry_id.decode()}"
            raw = fields.get(b"event")
            if raw is None:
                letters.append(DeadLetter(b"", "invalid: ingress entry has no 'event' field",
                                          origin))
                continue
            decoded = decode_message(raw, self._type, max_event_bytes=self._max_event_bytes,
                                     max_message_bytes=self._max_message_bytes)
            letters.extend(DeadLetter(r.payload, r.dead_letter_reason, origin)
                           for r in decoded.rejects)
            # An entry id starts with its Redis time in ms: fixed across re-sends.
            entry_time_s = int(entry_id.split(b"-", 1)[0]) / 1000
            events.extend(fill_missing_identity(decoded.events, raw, origin, entry_time_s))
        envelopes, oversize = pack_envelopes(events, self._partitions, self._batch_max,
                                             self._max_event_bytes, self._max_message_bytes)
        letters.extend(DeadLetter(
            encode_event(o.event)[:PREVIEW_BYTES],
            f"too_large: event of {o.size} bytes is over the {self._max_event_bytes}-byte limit",
            self._stream) for o in oversize)
        if letters:
            await self._dead_letters.write(letters)
            for letter in letters:
                DEAD_LETTERS.labels(self._type.value, letter.reason.split(":", 1)[0]).inc()
        for envelope in envelopes:
            await self._send(envelope)
        ids = [entry_id for entry_id, _ in entries]
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(self._stream, INGRESS_GROUP, *ids)
        pipe.xdel(self._stream, *ids)
        await pipe.execute()
        self.mirrored += len(entries)
        return len(entries)
