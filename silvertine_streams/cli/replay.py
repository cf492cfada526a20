"""``silvertine replay``: the canonical log by time, type, symbol and filter, at a speed.

With ``SILVERTINE_REDIS_URL`` (and, for ``--to topic:``, ``SILVERTINE_KAFKA_URL``)
unset it reads the running embedded stack of ``SILVERTINE_DATA_DIR``, and never
starts one: an empty new stack has nothing to replay.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from silvertine_streams.cli.common import (
    EVENT_TYPE,
    parse_time,
    run,
    running_stack_settings,
    with_redis,
)
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.topics import EVENT_TYPES

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from rich.console import Console

    from silvertine_streams.settings import Settings


@click.command()
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
    from rich.console import Console

    from silvertine_streams.replay import compile_where, parse_speed

    chosen = list(types) or list(EVENT_TYPES)
    start, stop = parse_time(since, "--since"), parse_time(until, "--until")
    pace = parse_speed(speed)
    predicate = compile_where(where, chosen) if where else None
    settings = running_stack_settings(kafka=target.startswith("topic:"))
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

    run(lambda: with_redis(settings, body))


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
