"""Isolated dispatch of events to subscribed handlers (guarantee 5).

For each event, CRITICAL handlers run (and finish) before HIGH, HIGH before
NORMAL, NORMAL before LOW; handlers of one priority run concurrently.

Isolation is the point: every handler has its own timeout and its own
:class:`~silvertine_streams.domain.circuit.CircuitBreaker`. A handler that
raises or overruns counts a failure on its own circuit; an open circuit skips
that handler; nothing a handler does reaches the caller or stops the other
handlers. What happened is returned as a :class:`DispatchReport` for the
metrics layer to read; this module does no I/O and logs nothing.

Sync handlers run directly on the event loop — they must be quick. They cannot
be interrupted, so one that runs past the timeout is counted as a timeout after
the fact (and its circuit opens if it keeps doing so). An async handler that
swallows cancellation cannot be stopped either; it is counted as a timeout once
it returns.

Idempotent handlers (``subscribe(..., idempotent=True)``) are called as
``handler(event, effects)``; when the caller passes the handler group's
:class:`~silvertine_streams.handlers.effects.Completions`, an event the
handler already completed is skipped, and each call's staged writes are
committed with the record of the call (see :mod:`.effects`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from silvertine_streams.domain.circuit import CircuitBreaker, CircuitState
from silvertine_streams.handlers.effects import Completions, Effects
from silvertine_streams.handlers.registry import HandlerPriority, HandlerRegistry, Subscription

__all__ = ["CircuitTransitionCallback", "DispatchReport", "HandlerDispatcher", "HandlerStats"]


@dataclass(slots=True)
class HandlerStats:
    """What one handler did during one dispatch.

    ``failures`` and ``timeouts`` are disjoint; both count against the circuit.

    Attributes:
        name: the subscription's name.
        priority: the subscription's priority.
        calls: invocations (including those that failed or timed out).
        failures: calls that raised.
        timeouts: calls that ran past the timeout.
        skipped_open: events not given to the handler because its circuit was open.
        skipped_done: events not given to an idempotent handler because it
            had completed them already (a redelivery).
        discarded: writes an idempotent handler staged that were not applied
            (a dispatch without a handler group: a replay).
        latency_s: total wall time of all calls, in seconds.
        last_error: the last exception a call raised (the ``TimeoutError`` for
            a timeout), for the caller to log.
    """

    name: str
    priority: HandlerPriority
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    skipped_open: int = 0
    skipped_done: int = 0
    discarded: int = 0
    latency_s: float = 0.0
    last_error: BaseException | None = None


@dataclass(slots=True)
class DispatchReport:
    """What happened during one :meth:`HandlerDispatcher.dispatch`.

    Attributes:
        event_type: the event type dispatched.
        events: how many events were dispatched.
        handlers: handler id to its stats; empty when nobody subscribed.
    """

    event_type: str
    events: int
    handlers: dict[str, HandlerStats] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """Return the failures plus timeouts of all handlers."""
        return sum(s.failures + s.timeouts for s in self.handlers.values())

    @property
    def skipped_open(self) -> int:
        """Return the calls skipped by open circuits, over all handlers."""
        return sum(s.skipped_open for s in self.handlers.values())

    @property
    def skipped_done(self) -> int:
        """Return the calls skipped because the handler had completed the event."""
        return sum(s.skipped_done for s in self.handlers.values())


CircuitTransitionCallback = Callable[[Subscription, CircuitState, CircuitState], None]
"""Called as ``on_transition(subscription, old, new)`` when a handler's circuit moves."""

# One handler of a plan: what to call, its breaker.
_Entry = tuple[Subscription, CircuitBreaker]


class _Watchdog:
    """One lazily re-armed timer bounding the calls awaited in one task.

    ``asyncio.timeout`` costs ~4 µs per call (a Timeout, a TimerHandle pushed
    on the loop's heap and cancelled again); with a fast handler that is most
    of the per-event cost. Instead, each call only records its deadline
    (:meth:`arm`), and at most one timer is pending: when it fires it either
    cancels the task (the current call overran) or re-arms itself for the
    current call's deadline. The timer then fires about once per ``timeout_s``
    of dispatching, whatever the number of calls.

    The cancellation is handed back like ``asyncio.timeout`` does it:
    :meth:`claim` uncancels the task and says whether a cancellation of
    someone else's is still pending.
    """

    __slots__ = ("_timeout_s", "_loop", "_task", "_base", "_deadline", "_handle", "_fired")

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - dispatch always runs in a task
            raise RuntimeError("HandlerDispatcher.dispatch must run in an asyncio task")
        self._task = task
        self._base = task.cancelling()
        self._deadline: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    def arm(self) -> None:
        """Start bounding a call that begins now."""
        deadline = self._loop.time() + self._timeout_s
        self._deadline = deadline
        if self._handle is None:
            self._handle = self._loop.call_at(deadline, self._expire)

    def disarm(self) -> None:
        """Stop bounding the call (it ended, one way or another)."""
        self._deadline = None

    def claim(self) -> bool:
        """Take back our cancellation, if we made one.

        Returns:
            Whether the task was cancelled by us alone: ``False`` when we did
            not cancel it, or when someone else cancelled it too.
        """
        if not self._fired:
            return False
        self._fired = False
        return self._task.uncancel() <= self._base

    def close(self) -> None:
        """Drop the pending timer, if any."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expire(self) -> None:
        """Timer callback: cancel the task if the current call is past its deadline."""
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return  # between calls or done; the next arm() starts a new timer
        if self._loop.time() >= deadline:
            # The task is suspended inside the handler (nothing else awaits
            # between arm and disarm), so that is where the cancel lands.
            self._fired = True
            self._deadline = None
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(deadline, self._expire)


class HandlerDispatcher:
    """Run the registry's handlers for batches of events, each handler isolated.

    Not thread-safe; one event loop owns it. Circuits are kept per handler id
    across dispatches and dropped when the handler unsubscribes.
    """

    def __init__(
        self,
        registry: HandlerRegistry,
        timeout_s: float = 1.0,
        failure_threshold: int = 5,
        reset_s: float = 30.0,
        *,
        now: Callable[[], float] = time.monotonic,
        on_transition: CircuitTransitionCallback | None = None,
    ) -> None:
        """Create a dispatcher over ``registry``.

        Args:
            registry: the subscriptions; changes are picked up on the next dispatch.
            timeout_s: how long one handler may take with one event.
            failure_threshold: consecutive failures that open a handler's circuit.
            reset_s: how long an open circuit waits before a trial call.
            now: the circuits' monotonic clock, in seconds (latency is always
                measured with ``time.perf_counter``).
            on_transition: told about every circuit state change, with the
                subscription; must be quick and must not raise.

        Raises:
            ValueError: ``timeout_s <= 0`` (and see :class:`CircuitBreaker`).
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        # Fail at construction rather than at the first handler's circuit.
        CircuitBreaker(failure_threshold, reset_s, now=now)
        self._registry = registry
        self._timeout_s = timeout_s
        self._failure_threshold = failure_threshold
        self._reset_s = reset_s
        self._now = now
        self._on_transition = on_transition
        self._circuits: dict[str, CircuitBreaker] = {}
        self._plans: dict[str, tuple[tuple[_Entry, ...], ...]] = {}
        self._plans_version = registry.version

    def circuit(self, handler_id: str) -> CircuitBreaker | None:
        """Return the circuit of ``handler_id``, ``None`` before its first dispatch."""
        return self._circuits.get(handler_id)

    async def dispatch(self, events: Sequence[Any], event_type: str,
                       completions: Completions | None = None) -> DispatchReport:
        """Give every event, in order, to the handlers subscribed to ``event_type``.

        For each event the priority groups run one after the other; the
        handlers of one group run concurrently: its sync handlers inline (they
        cannot overlap anyway), then its async ones together — one task each
        when there are several, none when there is one. Handler failures,
        timeouts and open circuits are counted in the report, never raised.

        Args:
            events: the batch, all of ``event_type``.
            event_type: selects the handlers.
            completions: the handler group's record of what its idempotent
                handlers completed; None (a replay) runs them without one
                and applies none of their staged writes.

        Returns:
            Per-handler counts for this batch.

        Raises:
            asyncio.CancelledError: only when the caller is cancelled.
            Exception: what ``completions.complete`` raises (the group lost
                its lease, or a non-transient Redis error); never a handler's.
        """
        plan = self._plan(event_type)
        report = DispatchReport(event_type, len(events))
        if not plan:
            return report
        stats = report.handlers
        groups: list[list[tuple[Subscription, CircuitBreaker, HandlerStats]]] = []
        for group in plan:
            members = []
            for subscription, circuit in group:
                handler_stats = HandlerStats(subscription.name, subscription.priority)
                stats[subscription.handler_id] = handler_stats
                members.append((subscription, circuit, handler_stats))
            groups.append(members)
        if len(groups) == 1 and len(groups[0]) == 1 and not groups[0][0][0].idempotent:
            # The commonest case, one plain handler: one loop over the whole
            # batch (a sync handler ~0.3 µs per event instead of ~1.2 µs through
            # the per-event loop below; an async one ~1 µs instead of ~2.5 µs).
            subscription, circuit, handler_stats = groups[0][0]
            if not subscription.is_async:
                await self._run_sync(subscription, circuit, handler_stats, events)
                return report
            watchdog = _Watchdog(self._timeout_s)
            try:
                await self._run_async(subscription, circuit, handler_stats, events, watchdog)
            finally:
                watchdog.close()
            return report
        run_async = self._run_async
        run_sync = self._run_sync
        once = self._call_once
        watchdog = _Watchdog(self._timeout_s)
        try:
            for event in events:
                one = (event,)
                for members in groups:
                    if len(members) == 1:
                        # The common case: no task, no gather, no timer per call.
                        subscription, circuit, handler_stats = members[0]
                        if subscription.idempotent:
                            await once(subscription, circuit, handler_stats, event, watchdog,
                                       completions)
                        elif subscription.is_async:
                            await run_async(subscription, circuit, handler_stats, one, watchdog)
                        else:
                            await run_sync(subscription, circuit, handler_stats, one)
                        continue
                    concurrent = []
                    for member in members:
                        subscription, circuit, handler_stats = member
                        if subscription.is_async:
                            concurrent.append(member)
                        elif subscription.idempotent:
                            await once(subscription, circuit, handler_stats, event, watchdog,
                                       completions)
                        else:
                            # A sync handler cannot overlap with anything, so
                            # running it inline loses no concurrency.
                            await run_sync(subscription, circuit, handler_stats, one)
                    if len(concurrent) == 1:
                        subscription, circuit, handler_stats = concurrent[0]
                        if subscription.idempotent:
                            await once(subscription, circuit, handler_stats, event, watchdog,
                                       completions)
                        else:
                            await run_async(subscription, circuit, handler_stats, one, watchdog)
                    elif concurrent:
                        # One task each (that is what concurrency costs, ~10 µs
                        # per handler); neither call raises but for cancellation
                        # (or a lost lease), so gather needs no return_exceptions.
                        await asyncio.gather(*(
                            once(sub, circ, st, event, None, completions) if sub.idempotent
                            else run_async(sub, circ, st, one, None)
                            for sub, circ, st in concurrent))
        finally:
            watchdog.close()
        return report

    async def _run_async(
        self,
        subscription: Subscription,
        circuit: CircuitBreaker,
        stats: HandlerStats,
        events: Iterable[Any],
        watchdog: _Watchdog | None,
    ) -> None:
        """Call one async handler with each event in turn; count the outcomes, never raise.

        Each call asks the circuit first (an open one skips the event).
        ``watchdog`` bounds the calls when they are awaited directly in the
        dispatching task; without one (inside a gather's own task) each call
        gets an ``asyncio.timeout`` of its own. With a whole batch this is the
        fast path of :meth:`dispatch`.
        """
        handler = subscription.handler
        allow = circuit.allow
        record_success = circuit.record_success
        timeout_s = self._timeout_s
        clock = time.perf_counter
        calls = skipped = 0
        latency = 0.0
        try:
            for event in events:
                if not allow():
                    skipped += 1
                    continue
                calls += 1
                scope: asyncio.Timeout | None = None
                start = clock()
                try:
                    if watchdog is not None:
                        watchdog.arm()
                        try:
                            await handler(event)
                        finally:
                            watchdog.disarm()
                    else:
                        async with asyncio.timeout(timeout_s) as scope:
                            await handler(event)
                except TimeoutError as exc:
                    # A TimeoutError the handler raised by itself is a plain failure.
                    if scope is not None and scope.expired():
                        stats.timeouts += 1
                    else:
                        stats.failures += 1
                    stats.last_error = exc
                    circuit.record_failure()
                except asyncio.CancelledError as exc:
                    if watchdog is not None and watchdog.claim():
                        stats.timeouts += 1
                        stats.last_error = TimeoutError(
                            f"handler {subscription.name!r} exceeded {timeout_s}s"
                        )
                    else:
                        task = asyncio.current_task()
                        if task is None or task.cancelling():
                            raise  # our caller is being cancelled: not the handler's failure
                        stats.failures += 1  # the handler raised CancelledError on its own
                        stats.last_error = exc
                    circuit.record_failure()
                except Exception as exc:
                    stats.failures += 1
                    stats.last_error = exc
                    circuit.record_failure()
                else:
                    if watchdog is not None:
                        # The handler swallowed our cancellation and returned: take
                        # the cancel request back; the elapsed check below counts it.
                        watchdog.claim()
                    elapsed = clock() - start
                    latency += elapsed
                    if elapsed > timeout_s:
                        # Ran to completion but over time: it swallowed its cancellation.
                        _overran(subscription, circuit, stats, elapsed, timeout_s)
                    else:
                        record_success()
                    continue
                latency += clock() - start
        finally:
            stats.calls += calls
            stats.skipped_open += skipped
            stats.latency_s += latency

    async def _run_sync(
        self,
        subscription: Subscription,
        circuit: CircuitBreaker,
        stats: HandlerStats,
        events: Iterable[Any],
    ) -> None:
        """Call one sync handler with each event in turn; count the outcomes, never raise.

        Each call asks the circuit first (an open one skips the event). The
        loop keeps its counts in locals and adds them to ``stats`` at the end:
        with a whole batch this is the fast path of :meth:`dispatch`.

        While the circuit is closed with no failure counted, ``allow()`` is
        ``True`` and ``record_success()`` changes nothing, so the loop skips
        both (~0.3 µs per event) until a call fails or awaits — the only
        times the circuit can change under it (a handler subscribed to two
        event types shares its circuit between two dispatching tasks).
        """
        handler = subscription.handler
        allow = circuit.allow
        record_success = circuit.record_success
        timeout_s = self._timeout_s
        clock = time.perf_counter
        calls = skipped = 0
        latency = 0.0
        clean = _is_clean(circuit)
        try:
            start = clock()
            for event in events:
                if not (clean or allow()):
                    skipped += 1
                    continue
                calls += 1
                scope: asyncio.Timeout | None = None
                try:
                    result = handler(event)
                    # A plain function may still hand back an awaitable (a
                    # lambda around a coroutine function); run it under the
                    # timeout too.
                    if result is not None and inspect.isawaitable(result):
                        clean = False
                        async with asyncio.timeout(timeout_s) as scope:
                            await result
                except TimeoutError as exc:
                    # A TimeoutError the handler raised by itself is a plain failure.
                    if scope is not None and scope.expired():
                        stats.timeouts += 1
                    else:
                        stats.failures += 1
                    stats.last_error = exc
                    circuit.record_failure()
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is None or task.cancelling():
                        raise  # our caller is being cancelled: not the handler's failure
                    stats.failures += 1  # the handler raised CancelledError on its own
                    stats.last_error = exc
                    circuit.record_failure()
                except Exception as exc:
                    stats.failures += 1
                    stats.last_error = exc
                    circuit.record_failure()
                else:
                    # One clock read per call: each call's time runs from the
                    # end of the previous one (the loop's own cost is noise
                    # next to a timeout).
                    end = clock()
                    elapsed = end - start
                    start = end
                    latency += elapsed
                    if elapsed > timeout_s:
                        # Ran to completion but over time: it cannot be interrupted.
                        _overran(subscription, circuit, stats, elapsed, timeout_s)
                        clean = False
                    elif not clean:
                        record_success()
                        clean = _is_clean(circuit)
                    continue
                clean = False
                end = clock()
                latency += end - start
                start = end
        finally:
            stats.calls += calls
            stats.skipped_open += skipped
            stats.latency_s += latency

    async def _call_once(
        self,
        subscription: Subscription,
        circuit: CircuitBreaker,
        stats: HandlerStats,
        event: Any,
        watchdog: _Watchdog | None,
        completions: Completions | None,
    ) -> None:
        """Call an idempotent handler unless it completed ``event``; record the call.

        The record (with the writes the handler staged, when it succeeded) is
        durable when this returns, so a crash from here on never calls the
        handler with ``event`` again.
        """
        name = subscription.name
        event_id: str = event.event_id
        if completions is not None and completions.completed(name, event_id):
            stats.skipped_done += 1
            return
        if not circuit.allow():
            stats.skipped_open += 1
            return
        effects = Effects()
        succeeded = await self._call(subscription, circuit, stats, event, watchdog, effects)
        if completions is None:
            stats.discarded += len(effects.commands)
            if succeeded:
                circuit.record_success()
            return
        refused = await completions.complete(
            name, event_id, effects.commands if succeeded else [])
        if refused:
            stats.failures += 1
            stats.last_error = RuntimeError(
                f"Redis refused {refused} of the writes handler {name!r} staged for "
                f"event {event_id}")
            circuit.record_failure()
        elif succeeded:
            circuit.record_success()

    async def _call(
        self,
        subscription: Subscription,
        circuit: CircuitBreaker,
        stats: HandlerStats,
        event: Any,
        watchdog: _Watchdog | None,
        effects: Effects | None = None,
    ) -> bool:
        """Call one handler with one event; count the outcome, never raise.

        ``watchdog`` bounds an async handler awaited directly in the
        dispatching task; without one (inside a gather's own task) the call
        gets an ``asyncio.timeout`` of its own. ``effects`` is passed as the
        second argument (idempotent handlers).

        Returns:
            Whether the call returned in time without raising.
        """
        stats.calls += 1
        timeout_s = self._timeout_s
        scope: asyncio.Timeout | None = None
        start = time.perf_counter()
        try:
            if subscription.is_async:
                if watchdog is not None:
                    watchdog.arm()
                    try:
                        if effects is None:
                            await subscription.handler(event)
                        else:
                            await subscription.handler(event, effects)
                    finally:
                        watchdog.disarm()
                else:
                    async with asyncio.timeout(timeout_s) as scope:
                        if effects is None:
                            await subscription.handler(event)
                        else:
                            await subscription.handler(event, effects)
            else:
                result = (subscription.handler(event) if effects is None
                          else subscription.handler(event, effects))
                # A plain function may still hand back an awaitable (a lambda
                # around a coroutine function); run it under the timeout too.
                if result is not None and inspect.isawaitable(result):
                    async with asyncio.timeout(timeout_s) as scope:
                        await result
        except TimeoutError as exc:
            # A TimeoutError the handler raised by itself is a plain failure.
            if scope is not None and scope.expired():
                stats.timeouts += 1
            else:
                stats.failures += 1
            stats.last_error = exc
            circuit.record_failure()
        except asyncio.CancelledError as exc:
            if watchdog is not None and watchdog.claim():
                stats.timeouts += 1
                stats.last_error = TimeoutError(
                    f"handler {subscription.name!r} exceeded {timeout_s}s"
                )
            else:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # our caller is being cancelled: not the handler's failure
                stats.failures += 1  # the handler raised CancelledError on its own
                stats.last_error = exc
            circuit.record_failure()
        except Exception as exc:
            stats.failures += 1
            stats.last_error = exc
            circuit.record_failure()
        else:
            if watchdog is not None:
                # The handler swallowed our cancellation and returned: take the
                # cancel request back; the elapsed check below counts it.
                watchdog.claim()
            elapsed = time.perf_counter() - start
            stats.latency_s += elapsed
            if elapsed > timeout_s:
                # Ran to completion but over time: a blocking sync handler,
                # or one that swallowed its cancellation.
                stats.timeouts += 1
                stats.last_error = TimeoutError(
                    f"handler {subscription.name!r} took {elapsed:.3f}s > {timeout_s}s"
                )
                circuit.record_failure()
                return False
            if effects is None:  # an idempotent call succeeds once its writes landed
                circuit.record_success()
            return True
        stats.latency_s += time.perf_counter() - start
        return False

    def _plan(self, event_type: str) -> tuple[tuple[_Entry, ...], ...]:
        """Return the groups of (subscription, circuit) for ``event_type``, cached."""
        registry = self._registry
        if registry.version != self._plans_version:
            self._plans.clear()
            self._plans_version = registry.version
            # Forget the circuits of handlers that are gone.
            for handler_id in [h for h in self._circuits if registry.get(h) is None]:
                del self._circuits[handler_id]
        plan = self._plans.get(event_type)
        if plan is None:
            plan = tuple(
                tuple((s, self._circuit_for(s)) for s in group)
                for group in registry.handlers_for(event_type)
            )
            self._plans[event_type] = plan
        return plan

    def _circuit_for(self, subscription: Subscription) -> CircuitBreaker:
        """Return the circuit of a subscription, creating it on first use."""
        circuit = self._circuits.get(subscription.handler_id)
        if circuit is None:
            on_transition = (
                None
                if self._on_transition is None
                else functools.partial(self._on_transition, subscription)
            )
            circuit = CircuitBreaker(
                self._failure_threshold,
                self._reset_s,
                now=self._now,
                on_transition=on_transition,
            )
            self._circuits[subscription.handler_id] = circuit
        return circuit


def _overran(subscription: Subscription, circuit: CircuitBreaker, stats: HandlerStats,
             elapsed: float, timeout_s: float) -> None:
    """Count a call that returned, but after its timeout, as a timeout."""
    stats.timeouts += 1
    stats.last_error = TimeoutError(
        f"handler {subscription.name!r} took {elapsed:.3f}s > {timeout_s}s"
    )
    circuit.record_failure()


def _is_clean(circuit: CircuitBreaker) -> bool:
    """Return whether ``circuit`` is closed with no failure since its last success."""
    return circuit.state is CircuitState.CLOSED and circuit.consecutive_failures == 0
