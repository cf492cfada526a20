"""``silvertine dlq list|requeue|purge``: the dead letters in the Redis stream ``dlq``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from silvertine_streams.cli.actions import audited, confirm
from silvertine_streams.cli.common import (
    config_option,
    parse_time,
    run,
    running_stack_settings,
    stdout_console,
    with_redis,
)
from silvertine_streams.cli.errors import fails_cleanly

if TYPE_CHECKING:
    from redis.asyncio import Redis


@click.group()
def dlq() -> None:
    """List, requeue and purge dead letters (the Redis stream dlq)."""


@dlq.command("list")
@config_option
@click.option("--reason", help="reason code (invalid, id_conflict) or text it contains")
@click.option("--limit", default=50, show_default=True, help="newest entries to show (0 = all)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@fails_cleanly
def dlq_list(reason: str | None, limit: int, as_json: bool) -> None:
    """Show dead letters, newest first, and the count per reason code."""
    from rich.table import Table

    from silvertine_streams.replay.dead_letters import list_dead_letters, reason_counts

    settings = running_stack_settings()

    async def body(redis: Redis) -> Any:
        return (await list_dead_letters(redis, reason, limit or None),
                await reason_counts(redis))

    entries, counts = run(lambda: with_redis(settings, body))
    if as_json:
        for entry in entries:
            click.echo(json.dumps({
                "entry_id": entry.entry_id, "at": entry.at.isoformat(), "reason": entry.reason,
                "origin": entry.origin, "event_type": entry.event_type,
                "event_id": entry.event_id, "payload": entry.payload.decode(errors="replace"),
            }))
        return
    out = stdout_console()
    table = Table(title=f"dead letters{f' matching {reason!r}' if reason else ''} "
                  f"(newest {len(entries)})")
    for name in ("entry", "at (UTC)", "type", "event id", "reason", "origin", "payload"):
        table.add_column(name, overflow="fold")
    for entry in entries:
        payload = entry.payload.decode(errors="replace")
        table.add_row(entry.entry_id, entry.at.strftime("%Y-%m-%d %H:%M:%S"),
                      entry.event_type or "?", entry.event_id or "-", entry.reason,
                      entry.origin, payload if len(payload) <= 80 else payload[:77] + "...")
    out.print(table)
    summary = ", ".join(f"{code}: {count}" for code, count in sorted(counts.items()))
    out.print(f"total {sum(counts.values())} ({summary or 'empty'})")


@dlq.command("requeue")
@config_option
@click.argument("entry_ids", nargs=-1)
@click.option("--reason", help="requeue every letter with this reason code or text")
@click.option("--all", "everything", is_flag=True, help="requeue every letter")
@click.option("--yes", is_flag=True, help="do not ask for confirmation (needed without a terminal)")
@fails_cleanly
def dlq_requeue(entry_ids: tuple[str, ...], reason: str | None, everything: bool,
                yes: bool) -> None:
    """Re-submit dead letters to their ingress stream events:<type>, then delete them.

    Shows what it would requeue and asks first, unless --yes; recorded in the
    audit trail (silvertine audit --actions). Fix the cause first: a letter that
    fails again comes back with its new reason.
    """
    from silvertine_streams.ops.dead_letters import requeue_entries, select_letters

    if not entry_ids and not reason and not everything:
        raise click.UsageError("give dlq entry ids, --reason R, or --all")
    settings = running_stack_settings()
    with audited(settings, "dlq requeue") as action:
        selection = run(lambda: with_redis(settings, lambda redis: select_letters(
            redis, entry_ids, reason, everything=everything)))
        routable = len(selection.entries) - selection.unroutable
        action.counts.update(matched=len(selection.entries), missing=len(selection.missing))
        if routable and not yes:
            routes = ", ".join(f"{n} to {stream}" for stream, n in sorted(selection.routes.items()))
            click.echo(f"would requeue {routable} dead letter(s): {routes}"
                       + (f"; {selection.unroutable} stay (no readable event type)"
                          if selection.unroutable else ""))
            confirm(f"requeue {routable} dead letter(s) ({routes})", yes)
        # Letters without a readable type are only reported (kept): no write for them.
        result = run(lambda: with_redis(
            settings, lambda redis: requeue_entries(redis, selection.entries)))
        result.missing[:0] = selection.missing
        action.counts.update(requeued=len(result.requeued), kept=len(result.kept),
                             missing=len(result.missing))
    for dlq_id, ingress, event_id in result.requeued:
        click.echo(f"requeued {dlq_id} -> {ingress} (event {event_id})")
    for dlq_id, why in result.kept:
        click.echo(f"kept     {dlq_id}: {why}")
    for dlq_id in result.missing:
        click.echo(f"missing  {dlq_id}: not in dlq")
    click.echo(f"{len(result.requeued)} requeued, {len(result.kept)} kept, "
               f"{len(result.missing)} missing")
    if result.missing and not result.requeued and not result.kept:
        sys.exit(1)


@dlq.command("purge")
@config_option
@click.option("--before", required=True, help="delete letters written before this ISO time")
@click.option("--reason", help="only letters with this reason code or text")
@click.option("--yes", is_flag=True, help="do not ask for confirmation (needed without a terminal)")
@fails_cleanly
def dlq_purge(before: str, reason: str | None, yes: bool) -> None:
    """Delete dead letters older than a time.

    Asks first unless --yes; recorded in the audit trail (silvertine audit --actions).
    """
    from silvertine_streams.ops.dead_letters import count_before, purge

    moment = parse_time(before, "--before")
    assert moment is not None
    settings = running_stack_settings()
    with audited(settings, "dlq purge") as action:
        count = run(lambda: with_redis(
            settings, lambda redis: count_before(redis, moment, reason)))
        action.counts.update(matched=count, purged=0)
        if count == 0:
            click.echo("nothing to purge")
            return
        what = f"delete {count} dead letter(s) written before {moment.isoformat()}"
        if reason:
            what += f" with reason {reason!r}"
        confirm(what, yes)
        deleted = run(lambda: with_redis(settings, lambda redis: purge(redis, moment, reason)))
        action.counts["purged"] = deleted
    click.echo(f"deleted {deleted} dead letter(s)")
