"""The in-process event bus: the platform's ``EventBus``, for tests and backtests.

No servers: events published here go through one bounded FIFO queue per event
type to the handlers subscribed on the bus, which *is* a
:class:`~silvertine_streams.handlers.registry.HandlerRegistry` — so the same
``setup(bus)`` functions a worker loads from ``SILVERTINE_HANDLERS`` run on it
unchanged — and are dispatched by the same
:class:`~silvertine_streams.handlers.dispatch.HandlerDispatcher` a worker uses
(priority groups, per-call timeout, a circuit breaker per handler).

Example::

    bus = EventBus()
    setup(bus)                                   # your SILVERTINE_HANDLERS setup
    async with bus:                              # start(); stop() drains
        await bus.publish(MarketDataEvent(symbol="BTC/USD", price=50000.0, volume=100))

How it stays fast (DESIGN §5: per-event work in plain Python, nothing per event
that can be done per batch):

* ``publish`` does a type lookup (which is the validation: events validate
  when they are built or decoded, so only our event classes get in), two set
  probes and a ``deque.append``; it suspends only when the queue is full.
* One drain task per event type wakes up, takes *everything* queued (a deque
  swap) and hands it to the dispatcher as one batch; counters and timings are
  kept per batch.
* Idempotency keeps two generations of event ids (sets) and drops the older
  one when the newer is ``idempotency_window_s`` old or holds
  ``idempotency_max_ids`` ids: O(1) per event, no clock read per event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self, TypedDict

from silvertine_streams.domain.circuit import CircuitState
from silvertine_streams.domain.flow import (
    REASON_DROPPED_NEWEST,
    REASON_DROPPED_OLDEST,
    OverflowPolicy,
    policy_for,
    shed,
)
from silvertine_streams.events import EVENT_CLASSES, Event, EventType
from silvertine_streams.handlers.dispatch import DispatchReport, HandlerDispatcher
from silvertine_streams.handlers.registry import HandlerRegistry, Subscription

if TYPE_CHECKING:
    from silvertine_streams.settings import Settings

__all__ = ["BusMetrics", "EventBus"]

log = logging.getLogger(__name__)

_EVERY_TYPE_BLOCKS: Final[Mapping[str, OverflowPolicy]] = {t.value: "block" for t in EventType}


class BusMetrics(TypedDict):
    """What :meth:`EventBus.get_metrics` returns (the platform's keys, then ours).

    Attributes:
        events_published: events queued (duplicates and refused events are not).
        events_processed: events given to every handler of their type.
        events_failed: handler calls that raised or timed out.
        events_duplicate: publishes dropped as duplicates of a recent event id.
        events_shed: events removed by an overflow policy, by reason
            (``conflated``, ``dropped_oldest``, ``dropped_newest``).
        queue_sizes: per event type, events queued or being delivered.
        avg_processing_times: per event type, seconds of handler time per event.
        handler_circuit_breakers: handler name (``name#id`` when names repeat)
            to its circuit state: ``closed``, ``open`` or ``half_open``.
        running: whether the bus accepts events.
    """

    events_published: int
    events_processed: int
    events_failed: int
    events_duplicate: int
    events_shed: dict[str, int]
    queue_sizes: dict[str, int]
    avg_processing_times: dict[str, float]
    handler_circuit_breakers: dict[str, str]
    running: bool


class _Lane:
    """The queue of one event type and what its drain task has done."""

    __slots__ = ("event_type", "policy", "capacity", "queue", "in_flight", "drain_waiter",
                 "space_waiters", "taken", "removed", "processed", "failed", "busy_s", "task")

    def __init__(self, event_type: EventType, policy: OverflowPolicy, capacity: int) -> None:
        self.event_type = event_type
        self.policy = policy
        self.capacity = capacity
        self.queue: deque[Event] = deque()
        self.in_flight = 0
        self.drain_waiter: asyncio.Future[None] | None = None
        self.space_waiters: list[asyncio.Future[None]] = []
        self.taken = 0        # events handed to the dispatcher
        self.removed = 0      # events shed after they were queued (conflate, drop_oldest)
        self.processed = 0
        self.failed = 0
        self.busy_s = 0.0
        self.task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """Return whether nothing is queued and no handler of this lane runs."""
        return not self.queue and not self.in_flight

    def wake_drain(self) -> None:
        """Wake the drain task if it waits for events."""
        waiter = self.drain_waiter
        if waiter is not None:
            self.drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def wake_publishers(self) -> None:
        """Wake every publisher waiting for room (they check again)."""
        waiters, self.space_waiters = self.space_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class EventBus(HandlerRegistry):
    """An asyncio event bus: per-type FIFO queues, dedupe, isolated handlers by priority.

    Subscribe with :meth:`subscribe` / :meth:`unsubscribe` (inherited: the
    bus is a handler registry), then :meth:`start`, :meth:`publish`,
    :meth:`stop`. Not thread-safe; one event loop owns it.

    Within one event type events reach the handlers in publish order; event
    types are drained by separate tasks, so a slow or hanging handler of one
    type does not hold up the others.
    """

    def __init__(
        self,
        max_queue_size: int = 10_000,
        enable_metrics: bool = True,
        *,
        idempotency_window_s: float = 300.0,
        idempotency_max_ids: int = 250_000,
        handler_timeout_s: float = 1.0,
        failure_threshold: int = 5,
        reset_s: float = 60.0,
        overflow: Mapping[str, OverflowPolicy] | None = None,
    ) -> None:
        """Create a stopped bus with no subscriptions.

        Args:
            max_queue_size: capacity of each event type's queue (>= 1).
            enable_metrics: measure handler time per batch for
                ``avg_processing_times``; the counters are kept per batch and
                always on.
            idempotency_window_s: an event id published again within this many
                seconds is dropped (and counted). Ids are forgotten between one
                and two windows after they were seen.
            idempotency_max_ids: bounds the memory of ids (at most twice this
                many are kept, ~60 MB at the default): once this many newer ids
                were seen an id may be forgotten earlier than the window, so
                above ~800 events/s the default remembers 250,000 ids rather
                than 300 s.
            handler_timeout_s: how long one handler may take with one event.
            failure_threshold: consecutive failures that open a handler's circuit.
            reset_s: how long an open circuit waits before a trial call.
            overflow: the policy of each event type (``EventType`` value ->
                ``block``/``conflate``/``drop_oldest``/``drop_newest``) when its
                queue is full. Types not named block: ``publish`` waits for room.
                Order and fill events always block. Pass
                :data:`~silvertine_streams.domain.flow.DEFAULT_OVERFLOW` for the
                worker's live policies (market data conflated).

        Raises:
            ValueError: a size or window is not positive, a policy is unknown or
                would shed orders or fills (and see :class:`HandlerDispatcher`).
        """
        super().__init__()
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        if idempotency_window_s <= 0 or idempotency_max_ids < 1:
            raise ValueError("idempotency_window_s and idempotency_max_ids must be positive, "
                             f"got {idempotency_window_s}, {idempotency_max_ids}")
        self.max_queue_size = max_queue_size
        self.enable_metrics = enable_metrics
        self._dispatcher = HandlerDispatcher(
            self, timeout_s=handler_timeout_s, failure_threshold=failure_threshold,
            reset_s=reset_s, on_transition=_log_transition,
        )
        unknown = sorted(set(overflow or {}) - set(_EVERY_TYPE_BLOCKS))
        if unknown:
            raise ValueError(f"overflow names unknown event types {unknown}; "
                             f"valid: {sorted(_EVERY_TYPE_BLOCKS)}")
        policies = {**_EVERY_TYPE_BLOCKS, **(overflow or {})}
        self._lanes = {
            t: _Lane(t, policy_for(t.value, policies), max_queue_size) for t in EventType
        }
        # Where publish routes an event by its exact class; empty unless
        # running, so one failed lookup covers "not an event" and "not running".
        self._routes: dict[type, _Lane] = {}
        self._running_routes: dict[type, _Lane] = {
            cls: self._lanes[t] for t, cls in EVENT_CLASSES.items()
        }
        self._window_s = idempotency_window_s
        self._max_ids = idempotency_max_ids
        self._ids: set[str] = set()
        self._old_ids: set[str] = set()
        self._ids_since = time.monotonic()
        self._duplicates = 0
        self._shed: dict[str, int] = {}
        self._running = False
        self._quiet: asyncio.Event | None = None  # set by drain tasks going idle during stop()

    @classmethod
    def from_settings(cls, settings: Settings,
                      overflow: Mapping[str, OverflowPolicy] | None = None) -> Self:
        """Create a bus sized and timed by ``settings`` (the config file's ``event_bus``).

        Args:
            settings: ``bus_max_queue_size``, ``bus_enable_metrics``,
                ``bus_idempotency_window_s``, and the handler settings a worker
                dispatches with (``handler_timeout_s``, ``circuit_failure_threshold``,
                ``circuit_reset_s``).
            overflow: as for the constructor (every type blocks when None).
        """
        return cls(
            settings.bus_max_queue_size, settings.bus_enable_metrics,
            idempotency_window_s=settings.bus_idempotency_window_s,
            handler_timeout_s=settings.handler_timeout_s,
            failure_threshold=settings.circuit_failure_threshold,
            reset_s=settings.circuit_reset_s,
            overflow=overflow,
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Return whether the bus accepts events."""
        return self._running

    async def start(self) -> None:
        """Start one drain task per event type; a no-op when already running."""
        if self._running:
            return
        for lane in self._lanes.values():
            if lane.task is not None:  # a stop() that was cancelled mid-drain
                await asyncio.gather(lane.task, return_exceptions=True)
            lane.task = asyncio.create_task(
                self._drain(lane), name=f"silvertine-bus-{lane.event_type.value}")
        self._routes = self._running_routes
        self._running = True

    async def stop(self) -> None:
        """Deliver everything queued, then stop; a no-op when not running.

        Events published while the bus drains are still taken — handlers that
        publish (market data -> signal -> order -> fill) finish their cascade —
        so stop your own producers first. The bus stops at the first moment
        every queue is empty and no handler is running; later publishes raise.
        Handlers keep their timeouts, so a hanging handler delays the stop by
        at most its timeout per queued event until its circuit opens.
        """
        if not self._running:
            return
        quiet = self._quiet = asyncio.Event()
        try:
            # A drain task that died (a bug) counts as idle: gather re-raises its error.
            while not all(lane.idle or lane.task is None or lane.task.done()
                          for lane in self._lanes.values()):
                quiet.clear()
                await quiet.wait()
        finally:
            self._quiet = None
        self._running = False
        self._routes = {}
        tasks = []
        for lane in self._lanes.values():
            lane.wake_drain()
            if lane.task is not None:
                tasks.append(lane.task)
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        for lane in self._lanes.values():
            lane.task = None

    async def __aenter__(self) -> Self:
        """Start the bus."""
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        """Stop the bus, draining what is queued."""
        await self.stop()

    # ------------------------------------------------------------------ publishing

    async def publish(self, event: Event) -> bool:
        """Queue ``event`` for the handlers of its type.

        Args:
            event: an event of :mod:`silvertine_streams.events` (validated
                when it was built or decoded).

        Returns:
            ``True`` when queued; ``False`` when dropped: a duplicate of an
            event id seen within the idempotency window, or refused by the
            ``drop_newest`` policy. Both are counted in :meth:`get_metrics`.

        Raises:
            TypeError: ``event`` is not one of our events.
            RuntimeError: the bus is not running (or stopped while this waited).
        """
        lane = self._routes.get(type(event))
        if lane is None:
            lane = self._route_other(event)
        event_id = event.event_id
        ids = self._ids
        if event_id in ids or event_id in self._old_ids:
            self._duplicates += 1
            return False
        ids.add(event_id)
        queue = lane.queue
        if len(queue) >= lane.capacity:
            return await self._overflow(lane, event)
        queue.append(event)
        if lane.drain_waiter is not None:
            lane.wake_drain()
        return True

    async def publish_replayed(self, event: Event) -> bool:
        """Queue an event replayed from the canonical log, past the idempotency check.

        A replay delivers events the handlers may have seen already, on
        purpose: :meth:`publish` would drop every one still in the id window.
        The replay marks them (``metadata["replay"]``); they are queued in
        order with live events of their type, and the overflow policy applies.
        Their ids are not remembered, so a live publish of the same id is not
        refused because of a replay.

        Returns:
            ``True`` when queued, ``False`` when refused by ``drop_newest``.

        Raises:
            TypeError: ``event`` is not one of our events.
            RuntimeError: the bus is not running.
        """
        lane = self._routes.get(type(event))
        if lane is None:
            lane = self._route_other(event)
        if len(lane.queue) < lane.capacity:
            self._enqueue(lane, event)
            return True
        # The overflow path forgets the id of an event it refuses: keep a live one's.
        known = event.event_id in self._ids
        try:
            return await self._overflow(lane, event)
        finally:
            if known:
                self._ids.add(event.event_id)

    def _route_other(self, event: object) -> _Lane:
        """The slow path of routing: a subclass of an event type, or an error."""
        if not isinstance(event, Event):
            raise TypeError(f"EventBus.publish takes an event of silvertine_streams.events, "
                            f"got {type(event).__name__}")
        if not self._running:
            raise RuntimeError("EventBus is not running: await bus.start() first")
        return self._lanes[event.event_type]

    async def _overflow(self, lane: _Lane, event: Event) -> bool:
        """Apply the lane's policy to ``event`` arriving at a full queue."""
        self._rotate_ids(time.monotonic())
        policy = lane.policy
        if policy == "drop_newest":
            self._ids.discard(event.event_id)  # refused, not seen: a retry may get in
            self._count_shed(REASON_DROPPED_NEWEST, 1)
            return False
        if policy == "drop_oldest":
            lane.queue.popleft()
            lane.removed += 1
            self._count_shed(REASON_DROPPED_OLDEST, 1)
            self._enqueue(lane, event)
            return True
        if policy == "conflate":
            result = shed([*lane.queue, event], "conflate", lane.capacity)
            if result.shed:  # else every queued event is another stream's latest: block
                lane.queue = deque(result.kept)
                lane.removed += len(result.shed)
                self._count_shed(result.reason, len(result.shed))
                self._wake_if_waiting(lane)
                return True
        return await self._wait_for_room(lane, event)

    async def _wait_for_room(self, lane: _Lane, event: Event) -> bool:
        """Block: wait until the drain task makes room, then queue ``event``."""
        loop = asyncio.get_running_loop()
        try:
            while len(lane.queue) >= lane.capacity:
                if not self._running:  # pragma: no cover - stop() waits for empty queues
                    raise RuntimeError("EventBus stopped while publish waited for room")
                waiter: asyncio.Future[None] = loop.create_future()
                lane.space_waiters.append(waiter)
                lane.wake_drain()
                await waiter
        except BaseException:
            self._ids.discard(event.event_id)  # never queued: a retry may get in
            raise
        self._enqueue(lane, event)
        return True

    def _enqueue(self, lane: _Lane, event: Event) -> None:
        lane.queue.append(event)
        self._wake_if_waiting(lane)

    @staticmethod
    def _wake_if_waiting(lane: _Lane) -> None:
        if lane.drain_waiter is not None:
            lane.wake_drain()

    def _count_shed(self, reason: str, count: int) -> None:
        self._shed[reason] = self._shed.get(reason, 0) + count

    def _rotate_ids(self, now: float) -> None:
        """Forget the older generation of ids once the newer one is full or old enough."""
        if now - self._ids_since >= self._window_s or len(self._ids) >= self._max_ids:
            self._old_ids = self._ids
            self._ids = set()
            self._ids_since = now

    # ------------------------------------------------------------------ draining

    async def _drain(self, lane: _Lane) -> None:
        """Deliver the lane's events in batches until the bus stops and the queue is empty."""
        loop = asyncio.get_running_loop()
        dispatch = self._dispatcher.dispatch
        type_name = lane.event_type.value
        clock = time.perf_counter
        while True:
            batch = lane.queue
            if not batch:
                if not self._running:
                    return
                if self._quiet is not None:
                    self._quiet.set()  # stop() checks whether every lane is idle
                waiter: asyncio.Future[None] = loop.create_future()
                lane.drain_waiter = waiter
                try:
                    await waiter
                finally:
                    lane.drain_waiter = None
                continue
            lane.queue = deque()
            size = len(batch)
            lane.taken += size
            lane.in_flight = size
            if lane.space_waiters:
                lane.wake_publishers()
            started = clock() if self.enable_metrics else 0.0
            report = await dispatch(batch, type_name)
            if self.enable_metrics:
                lane.busy_s += clock() - started
            lane.in_flight = 0
            lane.processed += size
            if report.handlers:
                failed = report.failed
                if failed:
                    lane.failed += failed
                    _log_failures(report)
            self._rotate_ids(time.monotonic())
            # Let publishers and the other lanes run between batches: a sync
            # handler never suspends, so a busy lane would otherwise hog the loop.
            await asyncio.sleep(0)

    # ------------------------------------------------------------------ metrics

    def get_metrics(self) -> BusMetrics:
        """Return the bus's counters since it was created (see :class:`BusMetrics`)."""
        lanes = self._lanes.values()
        return {
            "events_published": sum(lane.taken + len(lane.queue) + lane.removed for lane in lanes),
            "events_processed": sum(lane.processed for lane in lanes),
            "events_failed": sum(lane.failed for lane in lanes),
            "events_duplicate": self._duplicates,
            "events_shed": dict(self._shed),
            "queue_sizes": {lane.event_type.value: len(lane.queue) + lane.in_flight
                            for lane in lanes},
            "avg_processing_times": {
                lane.event_type.value: lane.busy_s / lane.processed if lane.processed else 0.0
                for lane in lanes
            },
            "handler_circuit_breakers": self._circuit_states(),
            "running": self._running,
        }

    def _circuit_states(self) -> dict[str, str]:
        subscriptions: Iterable[Subscription] = self._subscriptions.values()
        names = Counter(s.name for s in subscriptions)
        states = {}
        for subscription in subscriptions:
            name = subscription.name
            if names[name] > 1:
                name = f"{name}#{subscription.handler_id[:8]}"
            circuit = self._dispatcher.circuit(subscription.handler_id)
            states[name] = (CircuitState.CLOSED if circuit is None else circuit.state).value
        return states


def _log_transition(subscription: Subscription, old: CircuitState, new: CircuitState) -> None:
    level = logging.WARNING if new is CircuitState.OPEN else logging.INFO
    log.log(level, "circuit of handler %r: %s -> %s", subscription.name, old.value, new.value)


def _log_failures(report: DispatchReport) -> None:
    for stats in report.handlers.values():
        if stats.failures or stats.timeouts:
            log.warning("handler %r on %s: %d failed, %d timed out of %d calls; last error: %r",
                        stats.name, report.event_type, stats.failures, stats.timeouts,
                        stats.calls, stats.last_error)
