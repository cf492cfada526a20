"""Handler groups as an operator sees them: who follows which log, and forgetting a retired app.

Every app's handler group adds its app id to ``handlers:followers:<type>`` when
it starts following ``log:<type>``, and log retention never trims past the
cursor of an app in that set (:mod:`silvertine_streams.sinks.retention`). That
is the guarantee a stopped app relies on, and it is also why a retired app (a
renamed ``SILVERTINE_APP_ID``, a decommissioned desk) holds the log for ever.

* :func:`list_followers` reads, per type, every following app: its cursor, the
  entries it has not finished (lag, ``XLEN`` minus its finished count, as
  ``silvertine_handler_lag``), the entries only it keeps, whether its cursor is
  the one holding retention, and who holds its lease now.
* :func:`plan_forget` says what :func:`forget` would do, changing nothing.
* :func:`forget` removes the app from the followers sets and deletes its
  cursor, finished count and idempotent-completion records for those types,
  in one script that first checks the app's handler lease
  (``lease:handlers:<app id>``) is free. A worker holds that lease for as long
  as it runs the group, and takes it *before* it registers (``SADD``) and reads
  its cursor; so either the worker took it first and the script refuses,
  changing nothing, or the script ran first and the worker then registers
  afresh: never half removed.

**An app forgotten and started again** re-registers and, finding no cursor,
starts from the beginning of what the log still holds: its handlers see every
retained entry again, and its idempotent handlers are called again for events
they completed before (their records went with the cursor). Forget an app that
is retired for good; a stopped app that will come back should keep its place.

Only handler groups count here; a Redis consumer group on a log (the engine
makes none) also holds retention, and the retention round reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from silvertine_streams.domain.retention import parse_id
from silvertine_streams.errors import ActionRefused
from silvertine_streams.topics import (
    EVENT_TYPES,
    handler_completions,
    handler_cursor,
    handler_lease,
    handler_progress,
    log_followers,
    log_stream,
)

__all__ = [
    "Follower",
    "ForgetPlan",
    "ForgetResult",
    "HandlerGroupRunning",
    "followers_of",
    "forget",
    "held_back",
    "list_followers",
    "oldest",
    "plan_forget",
]

# KEYS: the app's lease, cursor hash, progress hash, then each type's followers
# set, then each type's completions hash. ARGV: the app id, then the types.
# Returns {0, holder} when the lease is held (nothing changed), else
# {1, followers sets left, cursor/progress fields and completion hashes deleted,
# then per type 1 if anything of it was removed, else 0}.
_FORGET = """
local holder = redis.call('GET', KEYS[1])
if holder then return {0, holder} end
local n = #ARGV - 1
local reply = {1, 0, 0}
for i = 1, n do
  local event_type = ARGV[1 + i]
  local left = redis.call('SREM', KEYS[3 + i], ARGV[1])
  local cleared = redis.call('HDEL', KEYS[2], event_type)
    + redis.call('HDEL', KEYS[3], event_type) + redis.call('DEL', KEYS[3 + n + i])
  reply[2] = reply[2] + left
  reply[3] = reply[3] + cleared
  reply[3 + i] = (left + cleared > 0) and 1 or 0
end
return reply
"""


class HandlerGroupRunning(ActionRefused):
    """The app's handler lease is held: a live worker runs its group; nothing was changed.

    Attributes:
        app_id: the app.
        holder: the worker holding ``lease:handlers:<app id>`` (``host-pid``).
    """

    def __init__(self, app_id: str, holder: str) -> None:
        self.app_id = app_id
        self.holder = holder
        super().__init__(
            f"refusing to forget app {app_id!r}: its handler group is running "
            f"({handler_lease(app_id)} held by {holder}); stop every `silvertine worker` "
            f"with SILVERTINE_APP_ID={app_id} (a stopped worker's lease expires within 5 s) "
            "and run it again; nothing was changed"
        )


@dataclass(frozen=True, slots=True)
class Follower:
    """One app following one type's log.

    Attributes:
        app_id: the app (``SILVERTINE_APP_ID``).
        event_type: whose log, ``log:<type>``.
        cursor: the last entry it finished; None when it never finished one
            (it holds the whole log).
        lag: entries of the log it has not finished.
        held_back: entries only it keeps: retention could trim them were it gone.
        holds_retention: its cursor is the oldest of the log's followers and it
            has entries left, so retention cannot trim past it.
        lease_holder: the worker running its group now (None: none).
    """

    app_id: str
    event_type: str
    cursor: str | None
    lag: int
    held_back: int
    holds_retention: bool
    lease_holder: str | None


@dataclass(frozen=True, slots=True)
class ForgetPlan:
    """What :func:`forget` would do, read without changing anything.

    Attributes:
        app_id: the app.
        followed: the types it follows, as :func:`list_followers` shows them.
        leftover: types it does not follow but still has a cursor, a finished
            count or completion records for (deleted too).
        lease_holder: the worker running its group now (None: none).
        others: every other app following a log (a misspelt app id shows here).
    """

    app_id: str
    followed: list[Follower] = field(default_factory=list)
    leftover: list[str] = field(default_factory=list)
    lease_holder: str | None = None
    others: list[str] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        """Every type the forget touches, in the engine's order."""
        touched = {f.event_type for f in self.followed} | set(self.leftover)
        return [t for t in EVENT_TYPES if t in touched]

    @property
    def held_back(self) -> int:
        """Log entries only this app keeps, over all its types."""
        return sum(f.held_back for f in self.followed)

    @property
    def lag(self) -> int:
        """Log entries it has not finished, over all its types."""
        return sum(f.lag for f in self.followed)


@dataclass(frozen=True, slots=True)
class ForgetResult:
    """What :func:`forget` did.

    Attributes:
        app_id: the app.
        types: the types it held anything of (was following, or had a cursor,
            count or records on), now forgotten.
        unfollowed: followers sets it was removed from.
        cleared: cursor and finished-count fields and completion hashes deleted.
    """

    app_id: str
    types: list[str]
    unfollowed: int
    cleared: int


# --- pure -------------------------------------------------------------------------


def oldest(cursors: Mapping[str, str | None]) -> set[str]:
    """Return the apps whose cursor is the oldest (None, no cursor, is older than any).

    Args:
        cursors: per app, its cursor on one log.
    """
    if not cursors:
        return set()
    keys = {app: parse_id(cursor or "0-0") for app, cursor in cursors.items()}
    low = min(keys.values())
    return {app for app, key in keys.items() if key == low}


def held_back(lags: Mapping[str, int]) -> dict[str, int]:
    """Return, per app, the entries of one log only it keeps: its lag beyond everyone else's.

    The finished entries lie before a cursor and retention may trim them; an
    app's unfinished entries are kept for it, and for any other app that has not
    finished them either. So what only it keeps is its lag minus the largest lag
    of the others.

    Args:
        lags: per app following the log, its lag.
    """
    found: dict[str, int] = {}
    for app, lag in lags.items():
        others = max((v for other, v in lags.items() if other != app), default=0)
        found[app] = max(0, lag - others)
    return found


def followers_of(
    event_type: str,
    length: int,
    rows: Mapping[str, tuple[str | None, int]],
    holders: Mapping[str, str | None],
) -> list[Follower]:
    """Return the followers of one log, from what Redis holds (sorted by app id).

    Args:
        event_type: the log's type.
        length: ``XLEN log:<type>``.
        rows: per app, its cursor (None: none) and finished count.
        holders: per app, who holds its lease now (None: free).
    """
    lags = {app: max(0, length - finished) for app, (_cursor, finished) in rows.items()}
    only = held_back(lags)
    first = oldest({app: cursor for app, (cursor, _finished) in rows.items()})
    return [Follower(app, event_type, cursor, lags[app], only[app],
                     app in first and lags[app] > 0, holders.get(app))
            for app, (cursor, _finished) in sorted(rows.items())]


# --- Redis ------------------------------------------------------------------------


async def list_followers(redis: Redis, types: Sequence[str] = EVENT_TYPES) -> list[Follower]:
    """Return every app following each type's log, by type (engine order) then app id."""
    types = _known(types)
    pipe = redis.pipeline(transaction=False)
    for event_type in types:
        pipe.smembers(log_followers(event_type))
        pipe.xlen(log_stream(event_type))
    replies = await pipe.execute()
    members = {t: sorted(_text(m) for m in replies[2 * i]) for i, t in enumerate(types)}
    lengths = {t: int(replies[2 * i + 1]) for i, t in enumerate(types)}
    apps = sorted({app for found in members.values() for app in found})
    pipe = redis.pipeline(transaction=False)
    for event_type in types:
        for app in members[event_type]:
            pipe.hget(handler_cursor(app), event_type)
            pipe.hget(handler_progress(app), event_type)
    for app in apps:
        pipe.get(handler_lease(app))
    replies = await pipe.execute()
    rows_end = len(replies) - len(apps)
    holders = {app: _text_or_none(h) for app, h in zip(apps, replies[rows_end:], strict=True)}
    found: list[Follower] = []
    at = 0
    for event_type in types:
        rows: dict[str, tuple[str | None, int]] = {}
        for app in members[event_type]:
            rows[app] = (_text_or_none(replies[at]), int(replies[at + 1] or 0))
            at += 2
        found.extend(followers_of(event_type, lengths[event_type], rows, holders))
    return found


async def plan_forget(redis: Redis, app_id: str,
                      types: Sequence[str] = EVENT_TYPES) -> ForgetPlan:
    """Return what forgetting ``app_id`` for ``types`` would do; change nothing."""
    types = _known(types)
    every = await list_followers(redis, types)
    pipe = redis.pipeline(transaction=False)
    pipe.hkeys(handler_cursor(app_id))
    pipe.hkeys(handler_progress(app_id))
    for event_type in types:
        pipe.exists(handler_completions(app_id, event_type))
    pipe.get(handler_lease(app_id))
    cursors, progress, *completions, holder = await pipe.execute()
    followed = [f for f in every if f.app_id == app_id]
    with_keys = ({_text(k) for k in cursors} | {_text(k) for k in progress}
                 | {t for t, exists in zip(types, completions, strict=True) if exists})
    following = {f.event_type for f in followed}
    leftover = [t for t in types if t in with_keys and t not in following]
    others = sorted({f.app_id for f in every} - {app_id})
    return ForgetPlan(app_id, followed, leftover, _text_or_none(holder), others)


async def forget(redis: Redis, app_id: str, types: Iterable[str] = EVENT_TYPES) -> ForgetResult:
    """Stop ``app_id`` holding ``types``' logs: unfollow them and delete its positions on them.

    Atomic: one script checks the app's handler lease is free and only then
    removes the app from ``handlers:followers:<type>`` and deletes its
    ``handlers:<app id>:cursor`` and ``:acked`` fields and ``:done:<type>`` hashes.

    Raises:
        HandlerGroupRunning: the lease is held (a worker runs the group); nothing changed.
    """
    chosen = _known(list(types))
    script = redis.register_script(_FORGET)
    keys = [handler_lease(app_id), handler_cursor(app_id), handler_progress(app_id),
            *(log_followers(t) for t in chosen),
            *(handler_completions(app_id, t) for t in chosen)]
    reply: Any = await script(keys=keys, args=[app_id, *chosen])
    if int(reply[0]) == 0:
        raise HandlerGroupRunning(app_id, _text(reply[1]))
    touched = [t for t, flag in zip(chosen, reply[3:], strict=True) if int(flag)]
    return ForgetResult(app_id, touched, int(reply[1]), int(reply[2]))


def _known(types: Sequence[str]) -> list[str]:
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s) {unknown}; types: {', '.join(EVENT_TYPES)}")
    return [t for t in EVENT_TYPES if t in types]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text_or_none(value: bytes | str | None) -> str | None:
    return None if value is None else _text(value)
