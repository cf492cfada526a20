"""``silvertine audit``: one event's story, or the operator actions recorded.

* ``silvertine audit EVENT_ID``: where an event came in, was logged, or why it
  was rejected.
* ``silvertine audit --actions``: who purged, requeued, rewound or replayed
  what, when, with which arguments and counts, and how it ended (the trail
  ``ops:actions`` that :mod:`silvertine_streams.cli.actions` writes).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from silvertine_streams.cli.common import (
    EVENT_TYPE,
    config_option,
    parse_time,
    run,
    running_stack_settings,
    stdout_console,
    with_redis,
)
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.errors import SilvertineError

if TYPE_CHECKING:
    from redis.asyncio import Redis


@click.command()
@config_option
@click.argument("event_id", required=False)
@click.option("--actions", "list_actions", is_flag=True,
              help="list the recorded operator actions (dlq purge/requeue, rewind, replay, "
                   "handlers forget) instead of auditing an event")
@click.option("--limit", default=50, show_default=True,
              help="--actions: newest actions to show (0 = all in the time range)")
@click.option("--type", "types", multiple=True, type=EVENT_TYPE,
              help="look only in these types' logs (default: all)")
@click.option("--scan-limit", default=100_000, show_default=True,
              help="entries per log the fallback scan may read (beyond the dedupe window)")
@click.option("--since", help="fallback scan: first log time, ISO-8601; --actions: first "
                              "action time")
@click.option("--until", help="fallback scan: log time to stop before, ISO-8601; --actions: "
                              "action time to stop before")
@click.option("--kafka/--no-kafka", default=True, show_default=True,
              help="also read the message's Kafka timestamp")
@click.option("--json", "as_json", is_flag=True,
              help="machine-readable output (--actions: one JSON object per line)")
@fails_cleanly
def audit(event_id: str | None, list_actions: bool, limit: int, types: tuple[str, ...],
          scan_limit: int, since: str | None, until: str | None, kafka: bool,
          as_json: bool) -> None:
    """Show where EVENT_ID came in, where it was logged, or why it was rejected.

    Exit status 0 when something was found, 1 when nothing was. With --actions
    instead of EVENT_ID: the operator actions recorded, newest first.
    """
    if list_actions == (event_id is not None):
        raise click.UsageError("give an EVENT_ID or --actions (one of them)")
    if list_actions:
        _list_actions(since, until, limit, as_json)
        return
    assert event_id is not None
    import asyncio

    from aiokafka.errors import KafkaError

    from silvertine_streams.ops.audit import audit as do_audit
    from silvertine_streams.ops.audit import kafka_timestamp, render_audit

    settings = running_stack_settings(kafka=False, redis=True)
    if kafka and settings.kafka_url is None:
        try:
            settings = running_stack_settings(kafka=True, redis=True)
        except SilvertineError:
            kafka = False
    start, stop = parse_time(since, "--since"), parse_time(until, "--until")

    async def body(redis: Redis) -> Any:
        report = await do_audit(redis, event_id, window_s=settings.dedupe_window_s,
                                types=list(types) or None, scan_limit=scan_limit,
                                since=start, until=stop)
        coordinates = next((f.kafka for f in report.log if f.kafka is not None), None)
        if kafka and coordinates is not None:
            try:
                report.kafka_timestamp_ms = await asyncio.wait_for(
                    kafka_timestamp(settings, coordinates), 10)
            except (TimeoutError, OSError, KafkaError) as exc:
                # An extra: the audit stands without the Kafka timestamp.
                report.notes.append(f"Kafka lookup failed: {exc!r}")
        return report

    report = run(lambda: with_redis(settings, body))
    if as_json:
        click.echo(json.dumps(_report_json(report), indent=2, default=str))
    else:
        click.echo(render_audit(report))
    sys.exit(0 if report.found else 1)


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "event_id": report.event_id,
        "status": report.status,
        "ingress": report.ingress if report.found else None,
        "log": [{"event_type": f.event_type, "entry_id": f.entry_id,
                 "logged_at": f.logged_at.isoformat(), "origin": f.origin,
                 "found_by": f.found_by, "event": f.event} for f in report.log],
        "dedupe": [{"key": d.key, "fingerprint": d.fingerprint, "entry_id": d.entry_id,
                    "expires_in_s": d.expires_in_s} for d in report.dedupe],
        "dead_letters": [{"entry_id": d.entry_id, "at": d.at.isoformat(), "reason": d.reason,
                          "origin": d.origin,
                          "payload": d.payload.decode(errors="replace")}
                         for d in report.dead_letters],
        "requeues": [{"dlq_entry": a, "ingress_entry": b} for a, b in report.requeues],
        "kafka_timestamp_ms": report.kafka_timestamp_ms,
        "notes": report.notes,
    }


def _list_actions(since: str | None, until: str | None, limit: int, as_json: bool) -> None:
    """Print the recorded operator actions, newest first."""
    from rich.markup import escape
    from rich.table import Table

    from silvertine_streams.ops.actions import list_actions, summary_line

    start, stop = parse_time(since, "--since"), parse_time(until, "--until")
    settings = running_stack_settings()
    records = run(lambda: with_redis(settings, lambda redis: list_actions(
        redis, start, stop, limit or None)))
    if as_json:
        for record in records:
            click.echo(json.dumps({
                "entry_id": record.entry_id, "at": record.recorded_at.isoformat(),
                "started_at": record.started_at.isoformat(), "duration_s": record.duration_s,
                "user": record.user, "host": record.host, "pid": record.pid,
                "action": record.action, "command": record.command, "args": record.args,
                "counts": record.counts, "outcome": record.outcome, "reason": record.reason,
            }, default=str))
        return
    out = stdout_console()
    table = Table(title=f"operator actions (newest {len(records)})")
    for name in ("at (UTC)", "who", "action", "outcome", "counts", "command / reason"):
        table.add_column(name, overflow="fold")
    for record in records:
        outcome = {"done": "done", "refused": "[yellow]refused[/]",
                   "failed": "[bold red]failed[/]"}[record.outcome]
        detail = record.command + (f"\n{record.reason}" if record.reason else "")
        # Commands and reasons hold user text ("--where x in [1]"): never rich markup.
        table.add_row(record.recorded_at.strftime("%Y-%m-%d %H:%M:%S"), escape(record.who),
                      escape(record.action), outcome, summary_line(record), escape(detail))
    out.print(table)
