"""Operations commands: ``replay``, ``rewind``, ``audit``, ``dlq``, ``monitor``.

They are registered on the ``silvertine`` command by :func:`register_ops`; run
on their own with ``python -m silvertine_streams.cli.ops <command>``.

With ``SILVERTINE_REDIS_URL`` / ``SILVERTINE_KAFKA_URL`` unset they use the
embedded stack of ``SILVERTINE_DATA_DIR`` when it runs, and never start one:
an empty new stack has nothing to replay or audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.errors import SilvertineError
from silvertine_streams.settings import Settings, load_settings
from silvertine_streams.topics import EVENT_TYPES

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_TYPE = click.Choice(EVENT_TYPES)




def _settings(kafka: bool = False, redis: bool = True) -> Settings:
    """Load settings and fill unset URLs from the running embedded stack (never start it)."""
    settings = load_settings()
    missing_kafka = kafka and settings.kafka_url is None
    missing_redis = redis and settings.redis_url is None
    if not (missing_kafka or missing_redis):
        return settings
    from silvertine_streams.embedded import EmbeddedStack

    running = {s.name: s for s in EmbeddedStack(settings).status() if s.alive}
    updates: dict[str, str] = {}
    for name, missing in (("kafka", missing_kafka), ("redis", missing_redis)):
        if not missing:
            continue
        status = running.get(name)
        if status is None or status.url is None:
            raise SilvertineError(
                f"no {name} to talk to: set SILVERTINE_{name.upper()}_URL, or start the "
                f"embedded stack (`silvertine stack up`, data dir {settings.data_dir})"
            )
        updates[f"{name}_url"] = status.url
    return settings.model_copy(update=updates)


def _stdout() -> Console:
    """A console for tables on stdout; wide when piped, so no cell is cut."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


async def _with_redis(settings: Settings, body: Callable[[Redis], Awaitable[T]]) -> T:
    assert settings.redis_url is not None
    client = Redis.from_url(settings.redis_url, socket_timeout=30, socket_connect_timeout=5)
    try:
        return await body(client)
    finally:
        await client.aclose()


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    from silvertine_streams.replay.where import parse_timestamp

    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.group()
def ops() -> None:
    """Replay, rewind, audit, dead letters and the live monitor."""


def register_ops(group: click.Group) -> None:
    """Add the operations commands to ``group`` (the ``silvertine`` command)."""
    for command in ops.commands.values():
        group.add_command(command)


# --- replay --------------------------------------------------------------------------


@ops.command()
@click.option("--type", "types", multiple=True, type=_TYPE,
              help="event type to replay (repeat for several; default: all)")
@click.option("--since", help="first log time to replay, ISO-8601 (inclusive)")
@click.option("--until", help="log time to stop before, ISO-8601 (exclusive)")
@click.option("--symbol", "symbols", multiple=True, help="only these symbols (repeatable)")
@click.option("--where", help='filter, e.g. "price > 100 and side == \'buy\'"')
@click.option("--speed", default="max", show_default=True,
              help="realtime, max, step, or a factor (2 = twice as fast, 0.5 = half)")
@click.option("--clock", type=click.Choice(["event", "log"]), default="event",
              show_default=True, help="pace and merge by event timestamp or by log time")
@click.option("--to", "target", default="print", show_default=True,
              help="print (JSON lines on stdout), handlers, or topic:<name>")
@click.option("--handlers", "handler_spec",
              help="module:function setups for --to handlers (default: SILVERTINE_HANDLERS)")
@click.option("--progress/--no-progress", default=None,
              help="progress bar on stderr (default: when stderr is a terminal)")
@fails_cleanly
def replay(types: tuple[str, ...], since: str | None, until: str | None,
           symbols: tuple[str, ...], where: str | None, speed: str, clock: str, target: str,
           handler_spec: str | None, progress: bool | None) -> None:
    """Replay the canonical log: by time, type, symbol and filter, at a chosen speed.

    Replayed events carry metadata replay=true and replayed_from=<log entry id>;
    they never enter the canonical log.
    """
    from silvertine_streams.replay import compile_where, parse_speed

    chosen = list(types) or list(EVENT_TYPES)
    start, stop = _time(since, "--since"), _time(until, "--until")
    pace = parse_speed(speed)
    predicate = compile_where(where, chosen) if where else None
    settings = _settings(kafka=target.startswith("topic:"))
    err = Console(stderr=True)
    show_progress = (err.is_terminal if progress is None else progress) and pace != "step"

    async def body(redis: Redis) -> None:
        summary = await _replay_to(settings, redis, target, handler_spec, err, show_progress,
                                   chosen, start, stop, symbols, predicate, pace, clock)
        err.print(
            f"replayed {summary.replayed:,} events (filtered {summary.filtered:,}"
            + (f", undecodable {summary.undecodable:,}" if summary.undecodable else "")
            + f") in {summary.duration_s:.2f} s, {summary.rate:,.0f} events/s; "
            f"replay clock span {summary.span_s:.3f} s"
            + (" — stopped" if summary.stopped else ""),
            highlight=False,
        )

    _run(lambda: _with_redis(settings, body))


async def _replay_to(settings: Settings, redis: Redis, target: str, handler_spec: str | None,
                     err: Console, show_progress: bool, types: list[str],
                     since: datetime | None, until: datetime | None, symbols: tuple[str, ...],
                     predicate: Any, pace: Any, clock: Any) -> Any:
    from silvertine_streams.replay import HandlerSink, TopicSink, print_sink, replay
    from silvertine_streams.replay.replayer import ReplayError

    async def go(sink: Any) -> Any:
        def run(on_progress: Any) -> Awaitable[Any]:
            return replay(redis, types, since, until, symbols or None, predicate, pace, sink,
                          clock=clock, on_progress=on_progress)

        if not show_progress:
            return await run(None)
        return await _with_progress(redis, types, since, until, err, run)

    if target == "print":
        return await go(print_sink())
    if target == "handlers":
        handler_sink = HandlerSink.from_settings(settings, handler_spec)
        summary = await go(handler_sink)
        for name, calls in sorted(handler_sink.calls.items()):
            err.print(f"handler {name}: {calls:,} calls, "
                      f"{handler_sink.failures.get(name, 0):,} failed", highlight=False)
        return summary
    if target.startswith("topic:"):
        async with TopicSink(settings, target.removeprefix("topic:")) as topic_sink:
            return await go(topic_sink)
    raise ReplayError(f"--to {target!r}: use print, handlers or topic:<name>")


async def _with_progress(redis: Redis, types: list[str], since: datetime | None,
                         until: datetime | None, err: Console,
                         run: Callable[[Any], Awaitable[Any]]) -> Any:
    from silvertine_streams.replay.reader import datetime_to_ms, entry_ms, log_bounds

    firsts, lasts = [], []
    for event_type in types:
        length, first, last = await log_bounds(redis, event_type)
        if length and first and last:
            firsts.append(entry_ms(first))
            lasts.append(entry_ms(last))
    low = datetime_to_ms(since) if since else (min(firsts) if firsts else 0)
    high = datetime_to_ms(until) if until else (max(lasts) if lasts else low)
    started = time.monotonic()
    with Progress(TextColumn("replay"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[replayed]:>12,} events  {task.fields[rate]:>10,.0f}/s"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err,
                  transient=False) as bar:
        task = bar.add_task("replay", total=max(high - low, 1), replayed=0, rate=0.0)

        def on_progress(state: Any) -> None:
            elapsed = time.monotonic() - started
            bar.update(task, completed=max(0, min(state.position_ms, high) - low),
                       replayed=state.replayed,
                       rate=state.replayed / elapsed if elapsed > 0 else 0.0)

        summary = await run(on_progress)
        bar.update(task, completed=max(high - low, 1))
        return summary


# --- rewind --------------------------------------------------------------------------


@ops.command()
@click.option("--to", "to", required=True, help="earliest, latest, or an ISO-8601 time")
@click.option("--type", "types", multiple=True, type=_TYPE,
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
    from silvertine_streams.ops.rewind import parse_rewind_target, rewind_group

    target = parse_rewind_target(to)
    settings = _settings(kafka=True, redis=False)
    if settings.redis_url is None:
        # Without Redis the rewind cannot check liveness; it says so when it matters.
        with contextlib.suppress(SilvertineError):
            settings = _settings(kafka=True, redis=True)
    plan = _run(lambda: rewind_group(settings, target, list(types) or None, dry_run=dry_run,
                                  beyond_dedupe_window=beyond_dedupe_window))
    out = _stdout()
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


# --- audit ---------------------------------------------------------------------------


@ops.command()
@click.argument("event_id")
@click.option("--type", "types", multiple=True, type=_TYPE,
              help="look only in these types' logs (default: all)")
@click.option("--scan-limit", default=100_000, show_default=True,
              help="entries per log the fallback scan may read (beyond the dedupe window)")
@click.option("--since", help="fallback scan: first log time, ISO-8601")
@click.option("--until", help="fallback scan: log time to stop before, ISO-8601")
@click.option("--kafka/--no-kafka", default=True, show_default=True,
              help="also read the message's Kafka timestamp")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@fails_cleanly
def audit(event_id: str, types: tuple[str, ...], scan_limit: int, since: str | None,
          until: str | None, kafka: bool, as_json: bool) -> None:
    """Show where EVENT_ID came in, where it was logged, or why it was rejected.

    Exit status 0 when something was found, 1 when nothing was.
    """
    from silvertine_streams.ops.audit import audit as do_audit
    from silvertine_streams.ops.audit import kafka_timestamp, render_audit

    settings = _settings(kafka=False, redis=True)
    if kafka and settings.kafka_url is None:
        try:
            settings = _settings(kafka=True, redis=True)
        except SilvertineError:
            kafka = False
    start, stop = _time(since, "--since"), _time(until, "--until")

    async def body(redis: Redis) -> Any:
        report = await do_audit(redis, event_id, window_s=settings.dedupe_window_s,
                                types=list(types) or None, scan_limit=scan_limit,
                                since=start, until=stop)
        coordinates = next((f.kafka for f in report.log if f.kafka is not None), None)
        if kafka and coordinates is not None:
            try:
                report.kafka_timestamp_ms = await asyncio.wait_for(
                    kafka_timestamp(settings.kafka_bootstrap, coordinates), 10)
            except (TimeoutError, OSError, KafkaError) as exc:
                # An extra: the audit stands without the Kafka timestamp.
                report.notes.append(f"Kafka lookup failed: {exc!r}")
        return report

    report = _run(lambda: _with_redis(settings, body))
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


# --- dlq -----------------------------------------------------------------------------


@ops.group()
def dlq() -> None:
    """List, requeue and purge dead letters (the Redis stream dlq)."""


@dlq.command("list")
@click.option("--reason", help="reason code (invalid, id_conflict) or text it contains")
@click.option("--limit", default=50, show_default=True, help="newest entries to show (0 = all)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@fails_cleanly
def dlq_list(reason: str | None, limit: int, as_json: bool) -> None:
    """Show dead letters, newest first, and the count per reason code."""
    from silvertine_streams.replay.dead_letters import list_dead_letters, reason_counts

    settings = _settings()

    async def body(redis: Redis) -> Any:
        return (await list_dead_letters(redis, reason, limit or None),
                await reason_counts(redis))

    entries, counts = _run(lambda: _with_redis(settings, body))
    if as_json:
        for entry in entries:
            click.echo(json.dumps({
                "entry_id": entry.entry_id, "at": entry.at.isoformat(), "reason": entry.reason,
                "origin": entry.origin, "event_type": entry.event_type,
                "event_id": entry.event_id, "payload": entry.payload.decode(errors="replace"),
            }))
        return
    out = _stdout()
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
@click.argument("entry_ids", nargs=-1)
@click.option("--reason", help="requeue every letter with this reason code or text")
@click.option("--all", "everything", is_flag=True, help="requeue every letter")
@fails_cleanly
def dlq_requeue(entry_ids: tuple[str, ...], reason: str | None, everything: bool) -> None:
    """Re-submit dead letters to their ingress stream events:<type>, then delete them.

    Fix the cause first: a letter that fails again comes back with its new reason.
    """
    from silvertine_streams.ops.dead_letters import requeue

    if not entry_ids and not reason and not everything:
        raise click.UsageError("give dlq entry ids, --reason R, or --all")
    settings = _settings()
    result = _run(lambda: _with_redis(
        settings, lambda redis: requeue(redis, entry_ids, reason, everything=everything)))
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
@click.option("--before", required=True, help="delete letters written before this ISO time")
@click.option("--reason", help="only letters with this reason code or text")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@fails_cleanly
def dlq_purge(before: str, reason: str | None, yes: bool) -> None:
    """Delete dead letters older than a time (asks first unless --yes)."""
    from silvertine_streams.ops.dead_letters import count_before, purge

    moment = _time(before, "--before")
    assert moment is not None
    settings = _settings()
    count = _run(lambda: _with_redis(settings, lambda redis: count_before(redis, moment, reason)))
    if count == 0:
        click.echo("nothing to purge")
        return
    what = f"{count} dead letter(s) written before {moment.isoformat()}"
    if reason:
        what += f" with reason {reason!r}"
    if not yes and not click.confirm(f"Delete {what}?", default=False):
        click.echo("nothing deleted")
        sys.exit(1)
    deleted = _run(lambda: _with_redis(settings, lambda redis: purge(redis, moment, reason)))
    click.echo(f"deleted {deleted} dead letter(s)")


# --- monitor -------------------------------------------------------------------------


@ops.command()
@click.option("--url", "urls", multiple=True,
              help="metrics endpoint (repeat for several workers; default: "
                   "http://127.0.0.1:$SILVERTINE_METRICS_PORT/metrics)")
@click.option("--once", is_flag=True, help="print one plain-text snapshot and exit")
@click.option("--interval", default=1.0, show_default=True, type=float,
              help="seconds between scrapes (rates are over this interval)")
@fails_cleanly
def monitor(urls: tuple[str, ...], once: bool, interval: float) -> None:
    """A live terminal dashboard of the workers' metrics (Ctrl-C quits)."""
    from silvertine_streams.observability.monitor import run_monitor

    if interval < 0:
        raise click.BadParameter("must be >= 0", param_hint="--interval")
    if not urls:
        urls = (f"http://127.0.0.1:{load_settings().metrics_port}/metrics",)
    console = Console(width=200) if once else Console()
    sys.exit(run_monitor(list(urls), interval_s=interval if (once or interval > 0) else 1.0,
                         once=once, console=console))


if __name__ == "__main__":  # pragma: no cover
    ops()
