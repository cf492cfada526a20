"""Audited operator actions: confirmed before, recorded after.

``dlq purge``, ``dlq requeue``, ``rewind``, ``replay --to topic:…|handlers`` and
``handlers forget`` change state or re-execute events. Each runs inside :func:`audited` and asks
with :func:`confirm` before it changes anything:

* ``--yes`` skips the question;
* without it, on a terminal, the command shows what it would do and asks;
* without a terminal (a script, CI, cron) it shows what it would do and is
  refused with one line naming ``--yes``, exit status 2, nothing changed.

:func:`audited` writes exactly one record per run to ``ops:actions``
(:mod:`silvertine_streams.ops.actions`), whatever the outcome: ``done``,
``refused`` (no ``--yes``, declined at the prompt, or refused by the engine:
workers running, a handler group running, an engine topic, no ``--handlers``) or
``failed``. Refusals
are recorded on purpose: "a cron job tried to purge the DLQ every night and
was refused" is what the trail is for. Arguments too malformed to parse stop
before a command reaches its servers and leave no record; nothing was tried.
Only ``kill -9`` mid-action escapes the record.

A record that cannot be written (Redis went away) is a warning on stderr; the
exit status stays the action's, so a script does not redo an action that was
done.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from silvertine_streams.cli.common import run, with_redis
from silvertine_streams.errors import ActionRefused, SilvertineError, redact

if TYPE_CHECKING:
    from silvertine_streams.ops.actions import ActionRecord, Outcome
    from silvertine_streams.settings import Settings


class NotConfirmed(ActionRefused):
    """No ``--yes`` and no terminal to ask on: refused, nothing changed (exit status 2)."""


class Declined(SilvertineError):
    """The operator answered no at the prompt: nothing changed (exit status 1)."""


@dataclass(slots=True)
class Action:
    """One audited action in progress; the command fills in what it learns.

    Attributes:
        name: ``dlq purge``, ``dlq requeue``, ``rewind``, ``replay`` or ``handlers forget``.
        args: the command's arguments, and context such as the consumer group.
        counts: what it did (or would do, until it is done).
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@contextmanager
def audited(settings: Settings, name: str, **context: Any) -> Iterator[Action]:
    """Run the block as the audited action ``name``; record it in ``ops:actions`` at the end.

    Args:
        settings: ``redis_url`` is where the record goes.
        name: the action's name.
        context: extra facts for ``args`` (the consumer group, the Kafka URL, …).
    """
    click_context = click.get_current_context()
    action = Action(name, {**dict(click_context.params), **context})
    started_at, started = datetime.now(UTC), time.monotonic()
    outcome: Outcome = "done"
    reason = ""
    try:
        yield action
    except (ActionRefused, Declined) as exc:
        outcome, reason = "refused", str(exc)
        raise
    except click.Abort:
        outcome, reason = "refused", "aborted at the prompt"
        raise
    except KeyboardInterrupt:
        outcome, reason = "failed", "interrupted (Ctrl-C)"
        raise
    except SystemExit as exc:
        if exc.code not in (0, None):
            outcome, reason = "failed", f"exit status {exc.code}"
        raise
    except Exception as exc:
        outcome, reason = "failed", str(exc) or type(exc).__name__
        raise
    finally:
        _write(settings, _record(action, command_line(click_context), outcome, reason,
                                 started_at, time.monotonic() - started))


def confirm(what: str, yes: bool, *, err: bool = False) -> None:
    """Go on only when confirmed: ``--yes``, or "y" at the prompt on a terminal.

    Args:
        what: what would be done, as a verb phrase ("delete 3 dead letter(s) …").
        yes: ``--yes`` was given.
        err: ask on stderr (when stdout carries data).

    Raises:
        NotConfirmed: no ``--yes`` and stdin is not a terminal.
        Declined: the operator answered no.
    """
    if yes:
        return
    if not stdin_is_terminal():
        raise NotConfirmed(f"refusing to {what} without --yes (no terminal to ask on); "
                           "nothing was changed")
    if not click.confirm(f"{what[:1].upper()}{what[1:]}?", default=False, err=err):
        raise Declined("declined: nothing was changed")


def stdin_is_terminal() -> bool:
    """Whether a person can answer a prompt on stdin."""
    return sys.stdin is not None and sys.stdin.isatty()


def command_line(context: click.Context) -> str:
    """The command as parsed, e.g. ``silvertine dlq purge --before 2026-01-01 --yes``.

    Rebuilt from the parsed parameters (options left at their default are
    left out), so it reads the same however the command was started.
    """
    path = ["silvertine", *_subcommand_path(context)]
    words: list[str] = []
    positional: list[str] = []
    for param in context.command.params:
        value = context.params.get(param.name or "")
        if isinstance(param, click.Argument):
            positional.extend(str(v) for v in (value if isinstance(value, tuple) else [value])
                              if v is not None)
            continue
        if not isinstance(param, click.Option) or value == param.default or value in (None, ()):
            continue
        if param.is_flag:
            if param.secondary_opts and not value:
                words.append(param.secondary_opts[0])
            elif value:
                words.append(_long(param.opts))
            continue
        for one in value if isinstance(value, tuple) else (value,):
            words.extend((_long(param.opts), str(one)))
    return shlex.join(redact(word) for word in [*path, *positional, *words])


def _subcommand_path(context: click.Context) -> list[str]:
    names: list[str] = []
    current: click.Context | None = context
    while current is not None and current.parent is not None:
        names.append(current.info_name or "")
        current = current.parent
    return names[::-1]


def _long(opts: list[str]) -> str:
    return next((o for o in opts if o.startswith("--")), opts[0])


def _record(action: Action, command: str, outcome: Outcome, reason: str,
            started_at: datetime, duration_s: float) -> ActionRecord:
    from silvertine_streams.ops.actions import ActionRecord, operator

    user, host, pid = operator()
    return ActionRecord(action=action.name, outcome=outcome, user=user, host=host, pid=pid,
                        command=command, args=action.args, counts=dict(action.counts),
                        reason=reason, started_at=started_at, duration_s=duration_s)


def _write(settings: Settings, record: ActionRecord) -> None:
    """Append ``record`` to ``ops:actions``; a failure is a warning, never the command's error."""
    from redis.exceptions import RedisError

    from silvertine_streams.ops.actions import record_action

    try:
        run(lambda: with_redis(settings, lambda redis: record_action(redis, record)))
    except (RedisError, OSError, SilvertineError) as exc:
        click.echo(f"silvertine: warning: {record.action} ({record.outcome}) was not recorded "
                   f"in the audit trail: {redact(str(exc))}", err=True)
