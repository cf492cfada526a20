"""``silvertine stack up|down|status``: the embedded Kafka (Tansu) + Redis stack."""

from __future__ import annotations

import sys

import click

from silvertine_streams.cli.common import config_option, load_settings
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.security import redact_url


@click.group()
def stack() -> None:
    """Start, stop and inspect the embedded Kafka (Tansu) + Redis stack."""


@stack.command("up")
@config_option
@fails_cleanly
def stack_up() -> None:
    """Start the embedded servers (those whose URL is not set) and declare the topics."""
    import asyncio

    from silvertine_streams.embedded import EmbeddedStack
    from silvertine_streams.kafka.admin import ensure_topics

    settings = EmbeddedStack(load_settings()).up()
    asyncio.run(ensure_topics(settings))
    click.echo(f"SILVERTINE_KAFKA_URL={settings.kafka_url}")
    # The user's own Redis URL may hold a password: it is masked, never printed.
    click.echo(f"SILVERTINE_REDIS_URL={settings.redis_display}")


@stack.command("down")
@config_option
@fails_cleanly
def stack_down() -> None:
    """Stop the embedded servers this data dir started (by PID)."""
    from silvertine_streams.embedded import EmbeddedStack

    EmbeddedStack(load_settings()).down()
    click.echo("embedded stack stopped")


@stack.command("status")
@config_option
@fails_cleanly
def stack_status() -> None:
    """Show the embedded servers of this data dir; exit 1 when one is down."""
    from silvertine_streams.embedded import EmbeddedStack

    statuses = EmbeddedStack(load_settings()).status()
    for status in statuses:
        if status.alive:
            click.echo(f"{status.name:6} up    pid={status.pid} {redact_url(status.url or '')}")
        else:
            click.echo(f"{status.name:6} down")
    sys.exit(0 if all(status.alive for status in statuses) else 1)
