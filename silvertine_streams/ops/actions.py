"""The operator-action trail: one entry per audited action in the Redis stream ``ops:actions``.

``dlq purge``, ``dlq requeue``, ``rewind``, ``replay --to topic:…|handlers`` and
``handlers forget`` each leave one :class:`ActionRecord`: who (OS user, host,
pid), when, what (the action and its command line), the arguments, the counts
(letters purged or requeued, partitions rewound, events replayed, log types an
app was forgotten for) and the outcome: ``done``, ``refused`` (nothing was
changed; the reason says why) or ``failed`` (with the error). ``silvertine
audit --actions`` lists them.

The ``silvertine`` commands record around each tool call
(:mod:`silvertine_streams.cli.actions`), not the tools themselves: only the
command knows who asked, with which arguments, whether it was confirmed and how
it ended; and an operator tool never imports another one, this trail included.
Code that calls :func:`~silvertine_streams.ops.dead_letters.purge` and friends
directly records with :func:`record_action` itself.

Nothing secret is stored: every string written (command line, arguments,
reason) goes through :func:`silvertine_streams.errors.redact` (URL passwords,
``password=``/``token=``… parameters), and an argument whose name says it is a
secret is replaced by ``***`` whole.

The stream is bounded: ``XADD MAXLEN ~ 100000``. A replay record (the largest
kind) measured ~650 bytes of Redis memory, so the trail stays under ~65 MB; at
a few hundred actions a day that is years of history, and even a script
requeueing every minute keeps two months.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis

from silvertine_streams.errors import redact
from silvertine_streams.replay.reader import entry_datetime, id_range
from silvertine_streams.topics import OPS_ACTIONS

MAXLEN = 100_000
"""Approximate bound of ``ops:actions`` (``XADD MAXLEN ~``): the oldest entries go first."""

Outcome = Literal["done", "refused", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("done", "refused", "failed")

_SECRET_NAME = re.compile(r"(?i)(pass(word|wd)?|secret|token|credentials?|api_?key)$")
_PAGE = 500


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One operator action, as recorded.

    Attributes:
        action: what was done: ``dlq purge``, ``dlq requeue``, ``rewind``, ``replay``,
            ``handlers forget``.
        outcome: ``done``, ``refused`` (nothing changed) or ``failed``.
        user: the OS user who ran it.
        host: the machine it ran on.
        pid: the process that ran it.
        command: the command line, as the command understood it (secrets hidden).
        args: its arguments and the context that matters (e.g. the consumer group).
        counts: what it did or would have done (``purged``, ``requeued``,
            ``partitions``, ``replayed``, ``forgotten``, …).
        reason: why it was refused or failed ('' when done).
        started_at: when it started (the operator's clock, UTC).
        duration_s: how long it took, prompt included.
        entry_id: its ``ops:actions`` entry id ('' until written); the time
            part is the Redis server's clock when it ended.
    """

    action: str
    outcome: Outcome
    user: str
    host: str
    pid: int
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    entry_id: str = ""

    @property
    def recorded_at(self) -> datetime:
        """When the record was written (the entry id's time), else when the action started."""
        return entry_datetime(self.entry_id) if self.entry_id else self.started_at

    @property
    def who(self) -> str:
        """``user@host``."""
        return f"{self.user}@{self.host}"


def operator() -> tuple[str, str, int]:
    """Who runs this process: ``(OS user, host name, pid)``.

    The user is the account of the real user id (not ``$USER``, which anyone
    can set); ``uid <n>`` when the system has no name for it (a container).
    """
    uid = os.getuid()
    try:
        import pwd

        user = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        user = f"uid {uid}"
    return user, socket.gethostname(), os.getpid()


def hide_secrets(value: Any, name: str = "") -> Any:
    """Return ``value`` with every string redacted, and secret-named entries replaced whole.

    Mappings, lists and tuples are walked (tuples become lists, as in JSON).
    """
    if name and _SECRET_NAME.search(name) and value not in (None, "", (), []):
        return "***"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): hide_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hide_secrets(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def to_fields(record: ActionRecord) -> dict[str, str]:
    """The stream entry's fields for ``record``; every string with its secrets hidden."""
    return {
        "action": record.action,
        "outcome": record.outcome,
        "user": record.user,
        "host": record.host,
        "pid": str(record.pid),
        "command": redact(record.command),
        "args": json.dumps(hide_secrets(record.args), sort_keys=True, default=str),
        "counts": json.dumps({str(k): int(v) for k, v in record.counts.items()}),
        "reason": redact(record.reason),
        "started_at": record.started_at.astimezone(UTC).isoformat(),
        "duration_s": f"{record.duration_s:.3f}",
    }


def from_fields(entry_id: str, fields: Mapping[bytes | str, bytes | str]) -> ActionRecord:
    """Read a stream entry back; a missing or unreadable field gets its empty value."""
    text = {_text(k): _text(v) for k, v in fields.items()}
    outcome: Outcome = next((o for o in OUTCOMES if o == text.get("outcome")), "failed")
    try:
        started_at = datetime.fromisoformat(text["started_at"])
    except (KeyError, ValueError):
        started_at = entry_datetime(entry_id)
    return ActionRecord(
        action=text.get("action", "?"),
        outcome=outcome,
        user=text.get("user", "?"),
        host=text.get("host", "?"),
        pid=_int(text.get("pid")),
        command=text.get("command", ""),
        args=_json_object(text.get("args")),
        counts={k: _int(v) for k, v in _json_object(text.get("counts")).items()},
        reason=text.get("reason", ""),
        started_at=started_at,
        duration_s=_float(text.get("duration_s")),
        entry_id=entry_id,
    )


async def record_action(redis: Redis, record: ActionRecord, maxlen: int = MAXLEN) -> str:
    """Append ``record`` to ``ops:actions`` (``MAXLEN ~ maxlen``); return its entry id."""
    entry_id = await redis.xadd(OPS_ACTIONS, to_fields(record),  # type: ignore[arg-type]
                                maxlen=maxlen, approximate=True)  # str fields are accepted
    return _text(entry_id)


async def list_actions(
    redis: Redis,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = 50,
) -> list[ActionRecord]:
    """Return recorded actions, newest first.

    Args:
        redis: the Redis holding ``ops:actions``.
        since: only actions recorded at or after this time.
        until: only actions recorded before this time.
        limit: at most this many (None = all in the range).
    """
    low, high = id_range(since, until)
    found: list[ActionRecord] = []
    while limit is None or len(found) < limit:
        count = _PAGE if limit is None else min(_PAGE, limit - len(found))
        page: Any = await redis.xrevrange(OPS_ACTIONS, high, low, count=count)
        if not page:
            break
        found.extend(from_fields(_text(entry_id), fields) for entry_id, fields in page)
        if len(page) < count:
            break
        before = _preceding_id(_text(page[-1][0]))
        if before is None:
            break
        high = before
    return found


def summary_line(record: ActionRecord) -> str:
    """``requeued=2 kept=1`` style counts, for tables and logs."""
    return " ".join(f"{k}={v:,}" for k, v in record.counts.items()) or "-"


def _preceding_id(entry_id: str) -> str | None:
    """The largest stream id before ``entry_id`` (exclusive ranges need Redis 6.2); None at 0-0."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{2**64 - 1}" if int(ms) > 0 else None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _float(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return 0.0


def _json_object(value: str | None) -> dict[str, Any]:
    try:
        decoded = json.loads(value) if value else {}
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
