"""The handler group: an app's handlers follow the canonical logs from a durable position.

Handlers do not run inside the pipeline. The pipeline makes events durable in
``log:<type>``; the handler group reads those logs from a durable cursor
(:mod:`.positions`), hands each batch of entries to the
:class:`~silvertine_streams.handlers.dispatch.HandlerDispatcher` — the same
dispatch ``silvertine replay --to handlers`` uses — and moves the cursor past
the entries only after the handlers ran. Hence (DESIGN §3.6):

* **At least once.** An entry a crash interrupted still lies after the cursor;
  the next holder of the group reads it again, first.
* **Exactly once across a graceful stop.** :meth:`HandlerGroup.stop` lets the
  handlers finish the log up to its end at the stop (the worker's pipelines
  have flushed by then), moves the cursor past it, then gives the lease up.
* **Exactly once in effect** for idempotent handlers: they are not given an
  event again that they completed, and what they staged on their ``Effects``
  was written with that record (:mod:`.effects`).
* **Order.** One worker of the app holds the group at a time (a lease) and
  reads each type's log in order: each symbol's events reach handlers in log
  order, as before, whichever worker logged them.
* **Isolation.** Timeouts and circuits are the dispatcher's; a slow handler
  holds its group back (its lag grows: ``silvertine_handler_lag``) but never
  the pipeline, which no longer waits for handlers at all.

Alerts a dispatch raises (a circuit opening) are sent, and confirmed, before
the cursor passes the entries that caused them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from silvertine_streams.domain.retention import parse_id
from silvertine_streams.errors import LeaseLost
from silvertine_streams.handlers.dispatch import HandlerDispatcher
from silvertine_streams.handlers.positions import (
    Batch,
    GroupCompletions,
    GroupPosition,
    completion_field,
)
from silvertine_streams.handlers.recent import RecentlyLogged
from silvertine_streams.handlers.registry import HandlerRegistry
from silvertine_streams.observability.metrics import (
    HANDLER_EVENTS,
    HANDLER_GROUP_HELD,
    HANDLER_LAG,
    record_dispatch,
)

log = logging.getLogger(__name__)

__all__ = ["HandlerGroup"]

BATCH_MAX = 2000
"""Log entries read (and handled, then passed by the cursor) at a time per event type."""
BLOCK_MS = 100
"""How long a read waits for new entries (bounds how long a graceful stop waits)."""


class HandlerGroup:
    """Runs an app's handlers on its canonical logs while this worker holds the group.

    Args:
        position: the group's lease, reads and cursors in Redis.
        registry: the subscriptions, and the callbacks to run on taking over.
        dispatcher: runs the handlers with timeouts and circuits.
        event_types: the types this worker may follow (its consumed types);
            those with a subscriber are followed.
        before_ack: awaited before the cursor moves past a batch (sends the
            alerts its dispatch queued, such as a circuit opening, and waits for Kafka).
        recent: events this worker's pipelines just logged, taken instead of
            decoded again while this worker runs the group.
        batch_max: entries read at a time per type.
        block_ms: how long one read waits for new entries.
    """

    def __init__(
        self,
        position: GroupPosition,
        registry: HandlerRegistry,
        dispatcher: HandlerDispatcher,
        event_types: Iterable[str],
        before_ack: Callable[[], Awaitable[None]] | None = None,
        recent: RecentlyLogged | None = None,
        *,
        batch_max: int = BATCH_MAX,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self.position = position
        self._registry = registry
        self._dispatcher = dispatcher
        self._candidates = tuple(event_types)
        self._before_ack = before_ack
        self._recent = recent
        self._batch_max = batch_max
        self._block_ms = block_ms
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self.handled = 0

    @property
    def event_types(self) -> list[str]:
        """The types followed: consumed by this worker and subscribed to."""
        return [t for t in self._candidates if self._registry.has_handlers(t)]

    async def run(self) -> None:
        """Hold the group when free and run it, until :meth:`stop`; Redis outages are waited out."""
        stopping = self._stopping = self._stopping or asyncio.Event()
        stopped = self._stopped = asyncio.Event()
        name = self.position.group
        delay = 0.05
        try:
            while not stopping.is_set():
                if not self.event_types:
                    return  # nothing subscribed to the types this worker consumes
                try:
                    if not await self.position.hold():
                        await self._pause(self.position.lease_ms / 3000)
                        continue
                    await self._session()
                    delay = 0.05
                except LeaseLost as exc:
                    log.warning("handler group %s: %s", name, exc)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("handler group %s waiting for Redis: %s", name, exc)
                    await self._pause(delay)
                    delay = min(delay * 2, 2.0)
                except ResponseError as exc:
                    # Redis refused a command (NOPERM from an ACL without the
                    # handlers:* keys, OOM at maxmemory): the handlers wait,
                    # their lag grows and alerts; the pipeline logs on.
                    log.error("handler group %s: Redis refused a command (%s); "
                              "retrying in %.1fs", name, exc, delay)
                    await self._pause(delay)
                    delay = min(delay * 2, 10.0)
                finally:
                    HANDLER_GROUP_HELD.labels(name).set(0)
            try:
                await self.position.release()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("handler group %s: lease not released (%s); it expires", name, exc)
        finally:
            stopped.set()

    async def stop(self, timeout_s: float = 10.0) -> bool:
        """Handle the logs up to their end as of now, move the cursors past them, give the lease up.

        Returns:
            Whether the group stopped within ``timeout_s`` (if not, what it had
            not finished is read again by the next holder: at least once).
        """
        if self._stopping is None:
            self._stopping = asyncio.Event()
        self._stopping.set()
        if self._stopped is None:
            return True  # never ran
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout_s)
        except TimeoutError:
            log.warning("handler group %s did not finish its batch within %.0fs",
                        self.position.group, timeout_s)
            return False
        return True

    async def update_lag(self) -> None:
        """Set ``silvertine_handler_lag{group,event_type}`` for every followed type."""
        for event_type in self.event_types:
            HANDLER_LAG.labels(self.position.group, event_type).set(
                await self.position.lag(event_type))

    # --- one tenure ---------------------------------------------------------------

    async def _session(self) -> None:
        """Run the group from taking the lease until it is lost or the group stops."""
        types = self.event_types
        for callback in self._registry.resume_callbacks:
            result = callback()
            if inspect.isawaitable(result):
                await result
        HANDLER_GROUP_HELD.labels(self.position.group).set(1)
        log.info("handler group %s: %s runs %s", self.position.group, self.position.holder,
                 ", ".join(types))
        lease = asyncio.ensure_future(self._keep_lease())
        followers = asyncio.gather(*(self._follow(t) for t in types))
        tasks: list[asyncio.Future[Any]] = [lease, followers]
        if self._recent is not None:
            self._recent.active = True
        try:
            # Followers return only after a stop (and its drain); the lease
            # task only by raising LeaseLost; either ends the tenure.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        finally:
            if self._recent is not None:
                self._recent.active = False
                self._recent.clear()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep_lease(self) -> None:
        """Renew the lease while the group runs (a stop's drain too); raise :class:`LeaseLost`.

        Runs until :meth:`_session` cancels it, once every follower has finished.
        """
        while True:
            await asyncio.sleep(self.position.lease_ms / 3000)
            if not await self.position.hold():
                raise LeaseLost(self.position.lease, self.position.holder)

    async def _follow(self, event_type: str) -> None:
        """Hand the log to the handlers batch by batch, from the group's cursor on.

        What a predecessor read but did not finish lies after the cursor: it
        comes first, whole, in log order.
        """
        assert self._stopping is not None
        stopping = self._stopping
        position = self.position
        await position.follow(event_type)  # before reading: retention keeps what lies after
        after = await position.cursor(event_type)
        completions = await position.completions(event_type)
        while not stopping.is_set():
            batch = await position.read(event_type, after, self._batch_max, self._block_ms,
                                        self._recent)
            if batch.entries:
                await self._handle(event_type, batch, completions)
                after = batch.last_id
        # A graceful stop: this worker's pipelines have flushed, so everything
        # it logged is in the log now. Hand the handlers the log up to its end
        # as it is at this moment (not what other workers keep adding), so
        # that a stopped worker leaves nothing logged unhandled behind it.
        end = parse_id(await position.last_id(event_type))
        while parse_id(after) < end:
            batch = await position.read(event_type, after, self._batch_max, 0, self._recent)
            if not batch.entries:
                break
            await self._handle(event_type, batch, completions)
            after = batch.last_id

    async def _handle(self, event_type: str, batch: Batch,
                      completions: GroupCompletions) -> None:
        """Dispatch one batch, send the alerts it raised, then move the cursor past it."""
        events = batch.events
        for entry_id, reason in batch.skipped:
            log.error("handler group %s: %s entry %s is not an event (%s); skipped",
                      self.position.group, event_type, entry_id, reason)
        if events:
            record_dispatch(await self._dispatcher.dispatch(events, event_type, completions))
        if self._before_ack is not None:
            await self._before_ack()
        idempotent = self._idempotent_names(event_type)
        cleared = ([completion_field(name, e.event_id) for e in events for name in idempotent]
                   if idempotent else [])
        await self.position.advance(event_type, batch, cleared)
        completions.forget(cleared)
        self.handled += batch.entries
        HANDLER_EVENTS.labels(self.position.group, event_type).inc(batch.entries)

    def _idempotent_names(self, event_type: str) -> list[str]:
        return [s.name for group in self._registry.handlers_for(event_type)
                for s in group if s.idempotent]

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the group is asked to stop."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
