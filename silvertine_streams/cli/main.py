"""The ``silvertine`` command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])




def _settings() -> Settings:
    return load_settings()


@click.group()
@click.version_option(package_name="silvertine-streams")
def main() -> None:
    """silvertine-streams: the event core of the Silvertine trading platform."""


@main.group()
def stack() -> None:
    """Start, stop and inspect the embedded Kafka (Tansu) + Redis stack."""


@stack.command("up")
@fails_cleanly
def stack_up() -> None:
    """Start the embedded servers (those whose URL is not set) and declare the topics."""
    import asyncio

    from silvertine_streams.embedded import EmbeddedStack
    from silvertine_streams.kafka.admin import ensure_topics

    settings = EmbeddedStack(_settings()).up()
    asyncio.run(ensure_topics(settings))
    click.echo(f"SILVERTINE_KAFKA_URL={settings.kafka_url}")
    click.echo(f"SILVERTINE_REDIS_URL={settings.redis_url}")


@stack.command("down")
@fails_cleanly
def stack_down() -> None:
    """Stop the embedded servers this data dir started (by PID)."""
    from silvertine_streams.embedded import EmbeddedStack

    EmbeddedStack(_settings()).down()
    click.echo("embedded stack stopped")


@stack.command("status")
@fails_cleanly
def stack_status() -> None:
    """Show the embedded servers of this data dir; exit 1 when one is down."""
    from silvertine_streams.embedded import EmbeddedStack

    statuses = EmbeddedStack(_settings()).status()
    for status in statuses:
        if status.alive:
            click.echo(f"{status.name:6} up    pid={status.pid} {status.url}")
        else:
            click.echo(f"{status.name:6} down")
    sys.exit(0 if all(status.alive for status in statuses) else 1)


@main.command()
@click.option("--no-supervise", is_flag=True, hidden=True,
              help="run the Faust worker in this process (what the supervisor starts)")
@fails_cleanly
def worker(no_supervise: bool) -> None:
    """Run a Faust worker of the pipeline (joins the consumer group SILVERTINE_APP_ID).

    The worker runs in a child process that is restarted when it exits on its own.
    """
    from silvertine_streams.embedded import resolve_settings_with_stack

    settings = resolve_settings_with_stack(_settings())
    if not no_supervise:
        from silvertine_streams.cli.supervisor import supervise
        from silvertine_streams.settings import settings_env

        child = [sys.executable, "-m", "silvertine_streams", "worker", "--no-supervise"]
        sys.exit(supervise(child, settings_env(settings, os.environ)))

    import faust

    from silvertine_streams.app import create_app

    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()


@main.command()
@click.option("--seconds", type=float, default=30.0, show_default=True,
              help="stop after this many seconds (Ctrl-C stops earlier)")
@click.option("--symbols", type=click.IntRange(1, 500), default=4, show_default=True,
              help="market-data symbols in the feed")
@click.option("--rate", type=click.FloatRange(1, 1_000_000), default=400.0, show_default=True,
              help="market-data ticks per second through Kafka")
@click.option("--headless", is_flag=True, help="plain progress lines instead of the live view")
@fails_cleanly
def demo(seconds: float, symbols: int, rate: float, headless: bool) -> None:
    """Run a live trading loop on the bus: feed, strategy, risk, venue, positions."""
    from silvertine_streams.demo import run_demo

    sys.exit(run_demo(_settings(), seconds, symbols=symbols, rate=rate,
                      live_view=not headless))


def _register_operations() -> None:
    # replay, rewind, audit, dlq, monitor: silvertine_streams/cli_ops.py
    from silvertine_streams.cli.ops import register_ops

    register_ops(main)


_register_operations()


if __name__ == "__main__":  # pragma: no cover
    main()
