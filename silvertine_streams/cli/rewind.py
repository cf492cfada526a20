"""``silvertine rewind``: reset the workers' committed Kafka offsets to a time."""

from __future__ import annotations

import contextlib

import click

from silvertine_streams.cli.common import (
    EVENT_TYPE,
    run,
    running_stack_settings,
    stdout_console,
)
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.errors import SilvertineError


@click.command()
@click.option("--to", "to", required=True, help="earliest, latest, or an ISO-8601 time")
@click.option("--type", "types", multiple=True, type=EVENT_TYPE,
              help="event type whose topic to rewind (repeatable; default: all)")
@click.option("--dry-run", is_flag=True, help="show the new offsets; change nothing")
@click.option("--beyond-dedupe-window", is_flag=True,
              help="allow reprocessing messages older than SILVERTINE_DEDUPE_WINDOW_S")
@fails_cleanly
def rewind(to: str, types: tuple[str, ...], dry_run: bool, beyond_dedupe_window: bool) -> None:
    """Reset the workers' committed offsets to a time; workers must be stopped.

    On the next start the workers reprocess from there; the canonical log drops
    what it already holds (the dedupe window), so it does not change.
    """
    from rich.table import Table

    from silvertine_streams.ops.rewind import parse_rewind_target, rewind_group

    target = parse_rewind_target(to)
    settings = running_stack_settings(kafka=True, redis=False)
    if settings.redis_url is None:
        # Without Redis the rewind cannot check liveness; it says so when it matters.
        with contextlib.suppress(SilvertineError):
            settings = running_stack_settings(kafka=True, redis=True)
    plan = run(lambda: rewind_group(settings, target, list(types) or None, dry_run=dry_run,
                                    beyond_dedupe_window=beyond_dedupe_window))
    out = stdout_console()
    table = Table(title=f"group {plan.group}: rewind to {plan.target}"
                  + (" (dry run: nothing committed)" if dry_run else ""))
    for name in ("topic", "partition", "committed", "new offset", "end", "to reprocess",
                 "skipped", "how"):
        table.add_column(name, justify="left" if name in ("topic", "how") else "right")
    for row in plan.partitions:
        table.add_row(row.topic, str(row.partition),
                      "-" if row.committed is None else str(row.committed), str(row.target),
                      str(row.end), str(row.to_reprocess), str(row.skipped), row.method)
    out.print(table)
    if plan.removed_members:
        out.print(f"removed {len(plan.removed_members)} member(s) left behind by stopped workers")
    for note in plan.notes:
        out.print(f"note: {note}")
    out.print("committed" if plan.committed else "not committed (dry run)")
