"""``RedisStreamManager``: the platform's Python face on our Redis streams.

A thin face over what the engine already writes and reads:

* :meth:`RedisStreamManager.publish_event` adds an entry to the ingress stream
  ``events:<type>`` in the entry format the ingress mirror reads (field
  ``event`` = the event JSON), the same as
  :meth:`~silvertine_streams.kafka.publisher.Publisher.publish_to_ingress`.
* :meth:`~RedisStreamManager.consume_events` / :meth:`~RedisStreamManager.acknowledge_event`
  read the ingress streams with the ingress consumer group
  (:data:`~silvertine_streams.topics.INGRESS_GROUP`): an acknowledged entry is
  deleted, as the mirror does, so an ingress stream holds only what waits.
  The single-process :class:`~silvertine_streams.agents.processor.EventProcessor`
  reads through :meth:`~RedisStreamManager.read_entries` and
  :meth:`~RedisStreamManager.claim_pending`.
* :meth:`~RedisStreamManager.replay_events` reads the canonical log
  ``log:<type>`` with the replay reader (:mod:`silvertine_streams.replay.reader`).

Example::

    manager = RedisStreamManager(redis_url="redis://127.0.0.1:6379/0")
    await manager.connect()
    entry_id = await manager.publish_event(MarketDataEvent(symbol="BTC/USD", price=50000.0))
    await manager.disconnect()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, Self, TypedDict

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from silvertine_streams.errors import EventTooLarge, ServerUnavailable
from silvertine_streams.events import Event, EventType, decode_message, encode_event
from silvertine_streams.events.identity import fill_missing_identity
from silvertine_streams.redis.clients import redis_client
from silvertine_streams.replay.reader import (
    id_range,
    log_bounds,
    mark_replayed,
    read_pages,
)
from silvertine_streams.settings import Settings, load_settings
from silvertine_streams.topics import EVENT_TYPES, INGRESS_GROUP, ingress_stream, log_stream

__all__ = ["ConsumedEvent", "IngressEntry", "RedisStreamManager", "StreamInfo"]

log = logging.getLogger(__name__)

EVENT_FIELD = "event"
"""The field of an ingress entry (and of a log entry) that holds the event JSON."""


class IngressEntry(NamedTuple):
    """One entry read from an ingress stream, as written.

    Attributes:
        stream_key: the stream, ``events:<type>``.
        message_id: the entry id, ``<ms>-<seq>``.
        payload: the ``event`` field, or None when the entry has none.
    """

    stream_key: str
    message_id: str
    payload: bytes | None

    @property
    def event_type(self) -> EventType:
        """The event type of the stream."""
        return EventType(self.stream_key.split(":", 1)[1])

    @property
    def origin(self) -> str:
        """``events:<type>/<entry id>``: where the entry was read (the mirror's origin too)."""
        return f"{self.stream_key}/{self.message_id}"

    @property
    def received_s(self) -> float:
        """When Redis added the entry (the ms in its id), in seconds."""
        return int(self.message_id.split("-", 1)[0]) / 1000


class ConsumedEvent(NamedTuple):
    """One event of an ingress entry, or why the entry holds none that is valid.

    Attributes:
        stream_key: the stream, ``events:<type>``.
        message_id: the entry id, to :meth:`RedisStreamManager.acknowledge_event`.
        event: the decoded, validated event; None when rejected.
        reason: why the payload was rejected, for a person ("" when valid).
    """

    stream_key: str
    message_id: str
    event: Event | None
    reason: str = ""


class StreamInfo(TypedDict):
    """What :meth:`RedisStreamManager.get_stream_info` returns.

    Attributes:
        event_type: the type.
        ingress_stream: ``events:<type>``.
        ingress_length: entries waiting there (acknowledged ones are deleted).
        ingress_pending: entries read by the ingress group but not acknowledged.
        log_stream: ``log:<type>``.
        log_length: events in the canonical log.
        first_log_id: its oldest entry id (None when empty).
        last_log_id: its newest entry id (None when empty).
    """

    event_type: str
    ingress_stream: str
    ingress_length: int
    ingress_pending: int
    log_stream: str
    log_length: int
    first_log_id: str | None
    last_log_id: str | None


class RedisStreamManager:
    """Connects to Redis and reads and writes our ingress streams and canonical logs.

    Args:
        redis_url: ``redis://[user:pass@]host:port/db`` (``rediss://`` for TLS);
            None = ``SILVERTINE_REDIS_URL``. Other settings (ACL user, TLS
            files, size bounds) come from ``settings``, else the environment.
        max_retries: connection attempts :meth:`connect` makes after the first.
        retry_delay: seconds before the first retry; each later one waits twice
            as long (1, 2, 4 s with the defaults).
        settings: the settings to use instead of the environment's.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        *,
        settings: Settings | None = None,
    ) -> None:
        if max_retries < 0 or retry_delay < 0:
            raise ValueError(f"max_retries and retry_delay must be >= 0, "
                             f"got {max_retries}, {retry_delay}")
        if settings is None:
            settings = load_settings(**({"redis_url": redis_url} if redis_url else {}))
        elif redis_url:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self.settings = settings
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self._redis: Redis | None = None

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """Whether :meth:`connect` succeeded and :meth:`disconnect` was not called since."""
        return self._redis is not None

    @property
    def redis(self) -> Redis:
        """The connected client (shared with the processor and the monitor).

        Raises:
            RuntimeError: not connected.
        """
        if self._redis is None:
            raise RuntimeError("RedisStreamManager is not connected: await connect() first")
        return self._redis

    async def connect(self) -> None:
        """Connect and PING, retrying with exponential backoff; a no-op when connected.

        Raises:
            ServerUnavailable: no answer after ``1 + max_retries`` attempts; it
                names the server (its password masked) and the last error.
            ConfigError: no Redis URL is set.
        """
        if self._redis is not None:
            return
        client = redis_client(self.settings, role="api")
        attempts = 1 + self.max_retries
        for attempt in range(attempts):
            try:
                await client.ping()
            except (RedisError, OSError) as exc:
                if attempt + 1 >= attempts:
                    await client.aclose()
                    raise ServerUnavailable(
                        str(self.settings.redis_url),
                        f"no answer after {attempts} attempts: {exc}") from exc
                delay = self.retry_delay * 2 ** attempt
                log.warning("Redis %s: %s; retrying in %.1fs (%d of %d)",
                            self.settings.redis_display, exc, delay, attempt + 1,
                            self.max_retries)
                await asyncio.sleep(delay)
            else:
                self._redis = client
                return

    async def disconnect(self) -> None:
        """Close the connections; a no-op when not connected."""
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        """Connect."""
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        """Disconnect."""
        await self.disconnect()

    # ------------------------------------------------------------------ ingress

    async def publish_event(self, event: Event) -> str:
        """Add ``event`` to its ingress stream ``events:<type>``; return the entry id.

        Delivery is at least once: publishing the same event again adds another
        entry, and the engine's idempotent log keeps the event once.

        Raises:
            EventTooLarge: its JSON is over ``SILVERTINE_MAX_EVENT_BYTES``.
        """
        value = encode_event(event)
        if len(value) > self.settings.max_event_bytes:
            raise EventTooLarge(event.event_id, len(value), self.settings.max_event_bytes)
        entry_id = await self.redis.xadd(ingress_stream(event.event_type.value),
                                         {EVENT_FIELD: value})
        return _text(entry_id)

    async def ensure_groups(self, event_types: Iterable[EventType | str]) -> None:
        """Create the ingress group on each type's stream (from its first entry) if missing."""
        for event_type in event_types:
            try:
                await self.redis.xgroup_create(ingress_stream(_type_name(event_type)),
                                               INGRESS_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_entries(
        self,
        event_types: Sequence[EventType | str],
        consumer_name: str,
        block: int | None = 1000,
        count: int = 10,
        *,
        pending: bool = False,
    ) -> list[IngressEntry]:
        """Read entries of the ingress streams with the ingress consumer group.

        Args:
            event_types: whose ``events:<type>`` streams to read.
            consumer_name: this reader's name in the group.
            block: ms to wait when nothing is there (None = do not wait).
            count: entries per stream at most.
            pending: read this consumer's delivered but unacknowledged entries
                (id ``0``) instead of new ones.
        """
        streams = {ingress_stream(_type_name(t)): ("0" if pending else ">")
                   for t in event_types}
        await self.ensure_groups(event_types)
        reply: Any = await self.redis.xreadgroup(
            INGRESS_GROUP, consumer_name, streams,  # type: ignore[arg-type]  # the stub's key type
            count=count, block=None if pending else block)
        entries: list[IngressEntry] = []
        # RESP2 (our clients' protocol): [[stream, [(id, fields), ...]], ...].
        for stream, stream_entries in reply or []:
            key = _text(stream)
            for entry_id, fields in stream_entries:
                if fields is None:  # pending, but deleted meanwhile
                    continue
                entries.append(IngressEntry(key, _text(entry_id), fields.get(b"event")))
        return entries

    async def claim_pending(self, event_type: EventType | str, consumer_name: str,
                            count: int = 100, start_id: str = "0-0",
                            ) -> tuple[list[IngressEntry], str]:
        """Take over up to ``count`` entries any consumer read but never acknowledged.

        Like the ingress mirror when it takes a stream over: the entries of a
        reader that crashed are handled first, before new ones.

        Returns:
            the entries, and the id to continue from (``"0-0"`` when done).
        """
        key = ingress_stream(_type_name(event_type))
        await self.ensure_groups([event_type])
        reply: Any = await self.redis.xautoclaim(key, INGRESS_GROUP, consumer_name,
                                                 min_idle_time=0, start_id=start_id,
                                                 count=count)
        entries = [IngressEntry(key, _text(entry_id), fields.get(b"event"))
                   for entry_id, fields in reply[1] if fields is not None]
        return entries, _text(reply[0])

    async def consume_events(
        self,
        event_types: Sequence[EventType | str],
        consumer_name: str,
        block: int | None = 1000,
        count: int = 10,
    ) -> list[ConsumedEvent]:
        """Read new ingress entries and decode them (one entry may carry a JSON array).

        Events sent without ``event_id``/``timestamp`` get them from the entry
        (``events:<type>/<entry id>#<index>``, the entry time), as the ingress
        mirror gives them. Acknowledge each entry with :meth:`acknowledge_event`
        once you are done with it; an entry left unacknowledged stays pending.

        Returns:
            one item per event, and one per rejected payload (``event`` None,
            ``reason`` saying why), in stream order.
        """
        consumed: list[ConsumedEvent] = []
        for entry in await self.read_entries(event_types, consumer_name, block, count):
            if entry.payload is None:
                consumed.append(ConsumedEvent(entry.stream_key, entry.message_id, None,
                                              "invalid: ingress entry has no 'event' field"))
                continue
            decoded = decode_message(entry.payload, entry.event_type,
                                     max_event_bytes=self.settings.max_event_bytes,
                                     max_message_bytes=self.settings.max_message_bytes)
            events = fill_missing_identity(decoded.events, entry.payload, entry.origin,
                                           entry.received_s)
            consumed.extend(ConsumedEvent(entry.stream_key, entry.message_id, event)
                            for event in events)
            consumed.extend(ConsumedEvent(entry.stream_key, entry.message_id, None,
                                          reject.dead_letter_reason)
                            for reject in decoded.rejects)
        return consumed

    async def acknowledge_event(self, stream_key: str, message_id: str) -> int:
        """Acknowledge one ingress entry and delete it; return 1 if it was pending, else 0."""
        return await self.acknowledge_events(stream_key, [message_id])

    async def acknowledge_events(self, stream_key: str, message_ids: Sequence[str]) -> int:
        """Acknowledge and delete ingress entries in one round trip; return how many were pending.
        """
        if not message_ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream_key, INGRESS_GROUP, *message_ids)
        pipe.xdel(stream_key, *message_ids)
        acked, _ = await pipe.execute()
        return int(acked)

    # ------------------------------------------------------------------ the canonical log

    async def replay_events(
        self,
        event_type: EventType | str,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        count: int | None = None,
    ) -> list[Event]:
        """Return events of ``log:<type>`` logged in ``[start_time, end_time)``, oldest first.

        The range is log time (when the canonical log received them). Each
        event is marked as a replay (``metadata["replay"]``,
        ``metadata["replayed_from"]`` = its log entry id), as every replay is;
        for paced replays onto handlers see ``EventMonitor.replay_events``.

        Args:
            event_type: whose log.
            start_time: first log time included (None = the beginning).
            end_time: log time to stop before (None = the end).
            count: events at most (None = all in the range).
        """
        name = _type_name(event_type)
        start, end = id_range(start_time, end_time)
        events: list[Event] = []
        page_size = min(count, 5000) if count else 5000
        pages = read_pages(self.redis, name, start, end, page_size)
        async for page in pages:
            mark_replayed(page.events, page.entry_ids)
            events.extend(page.events)
            if count is not None and len(events) >= count:
                await pages.aclose()  # type: ignore[attr-defined]  # an async generator
                return events[:count]
        return events

    async def get_stream_info(self, event_type: EventType | str) -> StreamInfo:
        """Describe the ingress stream and the canonical log of ``event_type``."""
        name = _type_name(event_type)
        stream = ingress_stream(name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(stream)
        pipe.xpending(stream, INGRESS_GROUP)
        length, pending = await pipe.execute(raise_on_error=False)
        log_length, first, last = await log_bounds(self.redis, name)
        return {
            "event_type": name,
            "ingress_stream": stream,
            "ingress_length": int(length) if isinstance(length, int) else 0,
            "ingress_pending": _pending_count(pending),
            "log_stream": log_stream(name),
            "log_length": log_length,
            "first_log_id": first,
            "last_log_id": last,
        }


def _type_name(event_type: EventType | str) -> str:
    """The value of an event type, checked.

    Raises:
        ValueError: not one of our event types.
    """
    name = event_type.value if isinstance(event_type, EventType) else event_type
    if name not in EVENT_TYPES:
        raise ValueError(f"unknown event type {name!r}; types: {', '.join(EVENT_TYPES)}")
    return name


def _pending_count(reply: Any) -> int:
    """The count of an XPENDING summary (0 when the group or stream does not exist)."""
    if isinstance(reply, dict):
        return int(reply.get("pending", 0))
    return 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
