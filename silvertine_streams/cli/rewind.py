"""``silvertine rewind``: reset the workers' committed Kafka offsets to a time."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import click

from silvertine_streams.cli.actions import audited, confirm
from silvertine_streams.cli.common import (
    EVENT_TYPE,
    config_option,
    run,
    running_stack_settings,
    stdout_console,
)
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.errors import ConfigError, SilvertineError, redact

if TYPE_CHECKING:
    from silvertine_streams.ops.rewind import RewindPlan


@click.command()
@config_option
@click.option("--to", "to", required=True, help="earliest, latest, or an ISO-8601 time")
@click.option("--type", "types", multiple=True, type=EVENT_TYPE,
              help="event type whose topic to rewind (repeatable; default: all)")
@click.option("--dry-run", is_flag=True, help="show the new offsets; change nothing")
@click.option("--beyond-dedupe-window", is_flag=True,
              help="allow reprocessing messages older than SILVERTINE_DEDUPE_WINDOW_S")
@click.option("--yes", is_flag=True, help="do not ask for confirmation (needed without a terminal)")
@fails_cleanly
def rewind(to: str, types: tuple[str, ...], dry_run: bool, beyond_dedupe_window: bool,
           yes: bool) -> None:
    """Reset the workers' committed offsets to a time; workers must be stopped.

    On the next start the workers reprocess from there; the canonical log drops
    what it already holds (the dedupe window), so it does not change. Shows the
    new offsets and asks first, unless --yes or --dry-run; recorded in the audit
    trail (silvertine audit --actions).
    """
    from silvertine_streams.ops.rewind import parse_rewind_target, rewind_group

    target = parse_rewind_target(to)
    settings = running_stack_settings(kafka=True, redis=False)
    if settings.redis_url is None:
        # Without Redis the rewind cannot check liveness; it says so when it matters.
        with contextlib.suppress(SilvertineError):
            settings = running_stack_settings(kafka=True, redis=True)
    chosen = list(types) or None

    def plan_of(dry: bool) -> RewindPlan:
        return run(lambda: rewind_group(settings, target, chosen, dry_run=dry,
                                        beyond_dedupe_window=beyond_dedupe_window))

    if dry_run:
        _show(plan_of(True), dry_run=True)
        return
    if settings.redis_url is None:
        raise ConfigError("SILVERTINE_REDIS_URL", None,
                          "a Redis URL: a rewind checks there that no worker runs and records "
                          "who rewound what in the audit trail (ops:actions)")
    with audited(settings, "rewind", group=settings.app_id,
                 kafka=redact(str(settings.kafka_url))) as action:
        if not yes:
            preview = plan_of(True)
            action.counts.update(_counts(preview))
            _show(preview, dry_run=True)
            confirm(f"commit these offsets for group {preview.group!r} "
                    f"({len(preview.partitions)} partition(s), "
                    f"{sum(p.to_reprocess for p in preview.partitions):,} message(s) to "
                    "reprocess)", yes)
        plan = plan_of(False)
        action.counts.update(_counts(plan))
    _show(plan, dry_run=False)


def _counts(plan: RewindPlan) -> dict[str, int]:
    return {"partitions": len(plan.partitions),
            "moved": sum(p.committed != p.target for p in plan.partitions),
            "to_reprocess": sum(p.to_reprocess for p in plan.partitions),
            "skipped": sum(p.skipped for p in plan.partitions),
            "removed_members": len(plan.removed_members)}


def _show(plan: RewindPlan, *, dry_run: bool) -> None:
    from rich.table import Table

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
