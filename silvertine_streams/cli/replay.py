"""``silvertine replay``: the canonical log by time, type, symbol and filter, at a speed.

With ``SILVERTINE_REDIS_URL`` (and, for ``--to topic:``, ``SILVERTINE_KAFKA_URL``)
unset it reads the running embedded stack of ``SILVERTINE_DATA_DIR``, and never
starts one: an empty new stack has nothing to replay.

``--to handlers`` and ``--to topic:`` re-execute events, so they are audited
operator actions (:mod:`silvertine_streams.cli.actions`): they show what they
would replay and need ``--yes`` (or "y" on a terminal), and each run leaves one
record in ``ops:actions``. ``--to handlers`` runs only the handlers named by
``--handlers``: the production set (``SILVERTINE_HANDLERS``) can send real
orders, so it is never the default. ``--to print`` only reads.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from silvertine_streams.cli.actions import audited, confirm
from silvertine_streams.cli.common import (
    EVENT_TYPE,
    config_option,
    parse_time,
    run,
    running_stack_settings,
    with_redis,
)
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.errors import redact
from silvertine_streams.topics import EVENT_TYPES, log_stream

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from rich.console import Console

    from silvertine_streams.replay import ReplaySummary
    from silvertine_streams.settings import Settings


@dataclass(frozen=True, slots=True)
class _Selection:
    """What to replay and how fast: the options every target shares."""

    types: list[str]
    since: datetime | None
    until: datetime | None
    symbols: tuple[str, ...]
    where: str | None
    predicate: Any
    pace: Any
    clock: Any


@click.command()
@config_option
@click.option("--type", "types", multiple=True, type=EVENT_TYPE,
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
              help="module:function,... setups for --to handlers (required: the production "
                   "SILVERTINE_HANDLERS are never the default)")
@click.option("--yes", is_flag=True,
              help="--to handlers|topic: do not ask for confirmation (needed without a terminal)")
@click.option("--progress/--no-progress", default=None,
              help="progress bar on stderr (default: when stderr is a terminal)")
@fails_cleanly
def replay(types: tuple[str, ...], since: str | None, until: str | None,
           symbols: tuple[str, ...], where: str | None, speed: str, clock: str, target: str,
           handler_spec: str | None, yes: bool, progress: bool | None) -> None:
    """Replay the canonical log: by time, type, symbol and filter, at a chosen speed.

    Replayed events carry metadata replay=true and replayed_from=<log entry id>;
    they never enter the canonical log. --to handlers (only those named by
    --handlers) and --to topic:<name> re-execute events: they show what they
    would replay and ask first, unless --yes, and are recorded in the audit
    trail (silvertine audit --actions).
    """
    from rich.console import Console

    from silvertine_streams.replay import ReplayError, compile_where, parse_speed, print_sink

    if target not in ("print", "handlers") and not target.startswith("topic:"):
        raise ReplayError(f"--to {target!r}: use print, handlers or topic:<name>")
    chosen = list(types) or list(EVENT_TYPES)
    selection = _Selection(
        chosen, parse_time(since, "--since"), parse_time(until, "--until"), symbols, where,
        compile_where(where, chosen) if where else None, parse_speed(speed), clock)
    settings = running_stack_settings(kafka=target.startswith("topic:"))
    err = Console(stderr=True)
    show_progress = (err.is_terminal if progress is None else progress) and selection.pace != "step"

    def go(sink: Any) -> Callable[[Redis], Awaitable[ReplaySummary]]:
        return lambda redis: _replay(redis, selection, sink, err, show_progress)

    if target == "print":
        _print_summary(err, run(lambda: with_redis(settings, go(print_sink()))))
        return
    context = {} if target == "handlers" else {"kafka": redact(str(settings.kafka_url))}
    with audited(settings, "replay", **context) as action:
        summary = _replay_audited(settings, target, handler_spec, yes, selection, err,
                                  go, action.counts)
    _print_summary(err, summary)


def _replay_audited(settings: Settings, target: str, handler_spec: str | None, yes: bool,
                    selection: _Selection, err: Console,
                    go: Callable[[Any], Callable[[Redis], Awaitable[ReplaySummary]]],
                    counts: dict[str, int]) -> ReplaySummary:
    """Replay to the handlers or a topic, once confirmed; fill ``counts`` for the record."""
    from silvertine_streams.replay import HandlerSink, ReplayError, TopicSink, refuse_engine_topic

    if target == "handlers":
        if not handler_spec:
            raise ReplayError(
                "--to handlers needs --handlers module:function[,...] naming the handlers to "
                "run; replay never runs the production SILVERTINE_HANDLERS unless you name "
                "them (they can send real orders)")
        handler_sink = HandlerSink.from_settings(settings, handler_spec)
        destination = f"through the handlers {handler_spec}"
    else:
        topic = target.removeprefix("topic:")
        refuse_engine_topic(topic, settings.app_id)
        destination = f"into the topic {topic!r}"
    if not yes:
        described, total = run(lambda: with_redis(settings, lambda redis: _preview(
            redis, selection)))
        counts["log_entries"] = total
        click.echo(f"would replay {described} {destination}", err=True)  # one line, unwrapped
        if total:  # an empty log re-executes nothing: no question
            confirm(f"replay up to {total:,} logged event(s) {destination}", yes, err=True)

    async def to_topic(redis: Redis) -> ReplaySummary:
        async with TopicSink(settings, topic) as sink:
            return await go(sink)(redis)

    if target == "handlers":
        summary = run(lambda: with_redis(settings, go(handler_sink)))
        for name, calls in sorted(handler_sink.calls.items()):
            err.print(f"handler {name}: {calls:,} calls, "
                      f"{handler_sink.failures.get(name, 0):,} failed", highlight=False)
        counts.update(handler_calls=sum(handler_sink.calls.values()),
                      handler_failures=sum(handler_sink.failures.values()))
    else:
        summary = run(lambda: with_redis(settings, to_topic))
    counts.update(replayed=summary.replayed, filtered=summary.filtered,
                  undecodable=summary.undecodable)
    return summary


async def _preview(redis: Redis, selection: _Selection) -> tuple[str, int]:
    """Describe what a replay would read (per log: entries and time span); the entry total."""
    from silvertine_streams.replay.reader import entry_datetime, log_bounds

    parts: list[str] = []
    total = 0
    for event_type in selection.types:
        length, first, last = await log_bounds(redis, event_type)
        total += length
        if length and first and last:
            parts.append(f"{log_stream(event_type)} ({length:,} entries, "
                         f"{entry_datetime(first):%Y-%m-%d %H:%M:%S} to "
                         f"{entry_datetime(last):%Y-%m-%d %H:%M:%S} UTC)")
        else:
            parts.append(f"{log_stream(event_type)} (empty)")
    described = ", ".join(parts)
    if selection.since or selection.until:
        described += (f", log time {selection.since.isoformat() if selection.since else '…'}"
                      f" to {selection.until.isoformat() if selection.until else '…'}")
    if selection.symbols:
        described += f", symbols {', '.join(selection.symbols)}"
    if selection.where:
        described += f", where {selection.where!r}"
    return described, total


def _print_summary(err: Console, summary: ReplaySummary) -> None:
    err.print(
        f"replayed {summary.replayed:,} events (filtered {summary.filtered:,}"
        + (f", undecodable {summary.undecodable:,}" if summary.undecodable else "")
        + f") in {summary.duration_s:.2f} s, {summary.rate:,.0f} events/s; "
        f"replay clock span {summary.span_s:.3f} s"
        + (" — stopped" if summary.stopped else ""),
        highlight=False,
    )


async def _replay(redis: Redis, selection: _Selection, sink: Any, err: Console,
                  show_progress: bool) -> ReplaySummary:
    from silvertine_streams.replay import replay

    def start(on_progress: Any) -> Awaitable[ReplaySummary]:
        return replay(redis, selection.types, selection.since, selection.until,
                      selection.symbols or None, selection.predicate, selection.pace, sink,
                      clock=selection.clock, on_progress=on_progress)

    if not show_progress:
        return await start(None)
    summary: ReplaySummary = await _with_progress(redis, selection.types, selection.since,
                                                  selection.until, err, start)
    return summary


async def _with_progress(redis: Redis, types: list[str], since: datetime | None,
                         until: datetime | None, err: Console,
                         run: Callable[[Any], Awaitable[Any]]) -> Any:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

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
