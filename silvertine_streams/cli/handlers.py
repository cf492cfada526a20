"""``silvertine handlers list|forget``: the apps whose handler groups follow the logs.

A handler group holds ``log:<type>`` against retention until it finishes it,
however long its app is stopped; ``forget`` lets a retired app go
(:mod:`silvertine_streams.ops.handler_groups`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from silvertine_streams.cli.actions import audited, confirm
from silvertine_streams.cli.common import (
    EVENT_TYPE,
    config_option,
    run,
    running_stack_settings,
    stdout_console,
    with_redis,
)
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.topics import EVENT_TYPES

if TYPE_CHECKING:
    from silvertine_streams.ops.handler_groups import Follower, ForgetPlan


@click.group()
def handlers() -> None:
    """List the apps following the logs; forget a retired one so retention can trim."""


@handlers.command("list")
@config_option
@click.option("--type", "types", multiple=True, type=EVENT_TYPE,
              help="only these types' logs (repeatable; default: all)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@fails_cleanly
def handlers_list(types: tuple[str, ...], as_json: bool) -> None:
    """Show every app following each log: cursor, lag, whether it holds retention, its lease."""
    from silvertine_streams.ops.handler_groups import list_followers

    settings = running_stack_settings()
    chosen = list(types) or list(EVENT_TYPES)
    followers = run(lambda: with_redis(settings, lambda redis: list_followers(redis, chosen)))
    if as_json:
        for follower in followers:
            click.echo(json.dumps({
                "app_id": follower.app_id, "event_type": follower.event_type,
                "cursor": follower.cursor, "lag": follower.lag,
                "held_back": follower.held_back, "holds_retention": follower.holds_retention,
                "lease_holder": follower.lease_holder,
            }))
        return
    if not followers:
        click.echo("no app follows a log")
        return
    _table("apps following the logs", followers, with_app=True)


@handlers.command("forget")
@config_option
@click.argument("app_id")
@click.option("--type", "types", multiple=True, type=EVENT_TYPE,
              help="forget it for these types only (repeatable; default: all)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation (needed without a terminal)")
@fails_cleanly
def handlers_forget(app_id: str, types: tuple[str, ...], yes: bool) -> None:
    """Stop a retired app holding the logs: unfollow them, delete its cursors.

    Retention may then trim what only it kept. Refused while a worker runs the
    app's handler group (its lease is held): stop it first. If the app starts
    again it registers afresh and its handlers run from the start of what the
    log still holds. Shows what it would do and asks first, unless --yes;
    recorded in the audit trail (silvertine audit --actions).
    """
    from silvertine_streams.ops.handler_groups import HandlerGroupRunning, forget, plan_forget

    settings = running_stack_settings()
    chosen = list(types) or list(EVENT_TYPES)
    with audited(settings, "handlers forget") as action:
        plan = run(lambda: with_redis(
            settings, lambda redis: plan_forget(redis, app_id, chosen)))
        action.counts.update(types=len(plan.types), lag=plan.lag, held_back=plan.held_back,
                             forgotten=0)
        if plan.lease_holder is not None:
            raise HandlerGroupRunning(app_id, plan.lease_holder)
        if not plan.types:
            scope = f" of {', '.join(types)}" if types else ""
            following = (f"; apps following: {', '.join(plan.others)}" if plan.others
                         else "; no app follows a log")
            click.echo(f"nothing to forget: app {app_id!r} follows no log{scope} and has no "
                       f"cursor on one{following}")
            return
        what = (f"forget app {app_id!r} for {', '.join(plan.types)} "
                f"({plan.held_back:,} log entries only it keeps)")
        if not yes:
            _show(plan)
            confirm(what, yes)
        result = run(lambda: with_redis(
            settings, lambda redis: forget(redis, app_id, plan.types)))
        action.counts["forgotten"] = len(result.types)
    forgotten = ", ".join(result.types) or "nothing (gone meanwhile)"
    click.echo(f"forgot app {app_id!r} for {forgotten}: left {result.unfollowed} followers "
               f"set(s), deleted {result.cleared} cursor, count and completion key(s); "
               "retention may now trim what only it kept")


def _show(plan: ForgetPlan) -> None:
    out = stdout_console()
    if plan.followed:
        _table(f"app {plan.app_id} follows", plan.followed, with_app=False)
    if plan.leftover:
        out.print(f"not following, but a cursor or records left for: {', '.join(plan.leftover)}")
    out.print(f"would forget app {plan.app_id} for {', '.join(plan.types)}: it holds back "
              f"{plan.held_back:,} log entries only it keeps ({plan.lag:,} it never finished)")


def _table(title: str, followers: list[Follower], *, with_app: bool) -> None:
    from rich.table import Table

    table = Table(title=title)
    columns = ["app"] if with_app else []
    columns += ["type", "cursor", "lag", "held back", "holds retention", "lease held by"]
    for name in columns:
        table.add_column(name, justify="right" if name in ("lag", "held back") else "left")
    for f in followers:
        cells = [f.app_id] if with_app else []
        cells += [f.event_type, f.cursor or "- (none yet)", f"{f.lag:,}", f"{f.held_back:,}",
                  "yes" if f.holds_retention else "no", f.lease_holder or "- (free)"]
        table.add_row(*cells)
    stdout_console().print(table)
