"""Handler subscriptions by event type and priority: who gets which event, in which group.

This keeps the seed EventBus's semantics: handlers subscribe to event types with
a priority, and :mod:`silvertine_streams.handlers.dispatch` runs each priority
group in turn (CRITICAL, HIGH, NORMAL, LOW), each handler isolated by its own
timeout and circuit breaker. The registry itself only answers "who, in which
order" for an event type; it runs nothing and does no I/O.
"""

from __future__ import annotations

import enum
import inspect
import itertools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Handler", "HandlerPriority", "HandlerRegistry", "Subscription"]

Handler = Callable[..., Any]
"""A sync or async callable taking one event (an idempotent one: the event and its
``Effects``); its return value is ignored."""


class HandlerPriority(enum.IntEnum):
    """Order in which handler groups see an event: lower runs first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


def _is_async(handler: Handler) -> bool:
    """Return whether calling ``handler`` gives a coroutine.

    ``inspect.iscoroutinefunction`` already sees through bound methods and
    ``functools.partial``; instances with an ``async def __call__`` need the
    second look.
    """
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


@dataclass(frozen=True, slots=True)
class Subscription:
    """One handler subscribed to some event types.

    Attributes:
        handler_id: unique id (uuid4 hex) returned by :meth:`HandlerRegistry.subscribe`.
        name: for people: metrics labels and logs.
        handler: the callable.
        event_types: the event types it receives.
        priority: its group.
        is_async: whether it returns a coroutine (decided once, at subscribe time).
        idempotent: whether the handler group records each event it completed
            and skips it on a redelivery; the handler is called as
            ``handler(event, effects)`` (see :class:`~silvertine_streams.handlers.Effects`).
    """

    handler_id: str
    name: str
    handler: Handler
    event_types: frozenset[str]
    priority: HandlerPriority
    is_async: bool
    idempotent: bool = False


Groups = tuple[tuple[Subscription, ...], ...]

_NO_GROUPS: Groups = ()


class HandlerRegistry:
    """Who wants which event type, grouped by priority.

    Lookups are precomputed on every change, so :meth:`handlers_for` is one
    dict lookup: subscriptions change rarely, events arrive all the time.

    Attributes:
        version: bumped on every subscribe and unsubscribe, so a dispatcher
            can tell when its cached plans are out of date.
    """

    def __init__(self) -> None:
        """Create an empty registry."""
        self._subscriptions: dict[str, Subscription] = {}
        self._groups: dict[str, Groups] = {}
        self._on_resume: list[Callable[[], Any]] = []
        self.version = 0

    def subscribe(
        self,
        handler: Handler,
        event_types: str | Iterable[str],
        priority: HandlerPriority = HandlerPriority.NORMAL,
        name: str | None = None,
        *,
        idempotent: bool = False,
    ) -> str:
        """Subscribe ``handler`` to ``event_types``.

        Args:
            handler: a sync or async callable taking one event (two with
                ``idempotent``: the event and its ``Effects``).
            event_types: one event type or several (``EventType`` members or
                their string values; both look up the same).
            priority: its group; lower runs first.
            name: for metrics and logs; defaults to the handler's qualified name.
            idempotent: have the handler group record every event this handler
                completed, atomically with the Redis writes it staged on its
                ``Effects``, and never call it again with an event it completed
                (a redelivery after a crash). The record is kept by name, so
                the name must be unique among idempotent subscriptions and
                stable across restarts.

        Returns:
            The handler id, for :meth:`unsubscribe`.

        Raises:
            ValueError: no event type given, or an idempotent handler's name is taken.
            TypeError: ``handler`` is not callable.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        # A bare string is iterable too; without this, "order" would subscribe
        # to the event types "o", "r", "d", ...
        types = frozenset((event_types,) if isinstance(event_types, str) else event_types)
        if not types:
            raise ValueError("subscribe needs at least one event type")
        handler_id = uuid.uuid4().hex
        if name is None:
            name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
        if idempotent and any(s.idempotent and s.name == name
                              for s in self._subscriptions.values()):
            raise ValueError(
                f"an idempotent handler named {name!r} is already subscribed: the group "
                "records completed events by handler name, so give each its own")
        self._subscriptions[handler_id] = Subscription(
            handler_id=handler_id,
            name=name,
            handler=handler,
            event_types=types,
            priority=HandlerPriority(priority),
            is_async=_is_async(handler),
            idempotent=idempotent,
        )
        self._reindex(types)
        return handler_id

    def on_resume(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` whenever this worker takes the handler group over.

        A worker runs the handler group only while it holds the group's lease
        (one worker at a time, so each symbol's events reach handlers in
        order). Each time it takes the group over (at start, or after another
        worker died) it calls, and awaits, these callbacks before it hands any
        event to a handler: the place to reload state kept beside the group's
        position, such as what idempotent handlers staged on their ``Effects``.

        Args:
            callback: a sync or async callable without arguments. An exception
                stops the group from starting (it retries after a pause).
        """
        self._on_resume.append(callback)

    @property
    def resume_callbacks(self) -> tuple[Callable[[], Any], ...]:
        """The callbacks given to :meth:`on_resume`, in order."""
        return tuple(self._on_resume)

    def unsubscribe(self, handler_id: str) -> bool:
        """Remove a subscription.

        Args:
            handler_id: as returned by :meth:`subscribe`.

        Returns:
            Whether it was subscribed.
        """
        subscription = self._subscriptions.pop(handler_id, None)
        if subscription is None:
            return False
        self._reindex(subscription.event_types)
        return True

    def handlers_for(self, event_type: str) -> Groups:
        """Return the subscriptions for ``event_type`` as priority groups.

        Returns:
            Non-empty groups ordered CRITICAL → LOW; within a group, in
            subscription order. ``()`` when nobody subscribed.
        """
        return self._groups.get(event_type, _NO_GROUPS)

    def has_handlers(self, event_type: str) -> bool:
        """Return whether anyone subscribed to ``event_type`` (skip dispatch if not)."""
        return event_type in self._groups

    def event_types(self) -> frozenset[str]:
        """Return every event type somebody subscribed to."""
        return frozenset(self._groups)

    def get(self, handler_id: str) -> Subscription | None:
        """Return the subscription of ``handler_id``, ``None`` if there is none."""
        return self._subscriptions.get(handler_id)

    def __len__(self) -> int:
        """Return the number of subscriptions."""
        return len(self._subscriptions)

    def _reindex(self, event_types: frozenset[str]) -> None:
        """Recompute the groups of the event types a change touched."""
        self.version += 1
        for event_type in event_types:
            # dicts keep insertion order and sorted() is stable, so handlers of
            # one priority stay in subscription order.
            subscribed = sorted(
                (s for s in self._subscriptions.values() if event_type in s.event_types),
                key=_priority_of,
            )
            if not subscribed:
                self._groups.pop(event_type, None)
                continue
            self._groups[event_type] = tuple(
                tuple(members) for _, members in itertools.groupby(subscribed, _priority_of)
            )


def _priority_of(subscription: Subscription) -> HandlerPriority:
    """Return the sort and group key of a subscription."""
    return subscription.priority
