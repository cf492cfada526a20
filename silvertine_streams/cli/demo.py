"""``silvertine demo``: a live trading loop on the bus."""

from __future__ import annotations

import sys

import click

from silvertine_streams.cli.common import config_option, load_settings
from silvertine_streams.cli.errors import fails_cleanly


@click.command()
@config_option
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

    sys.exit(run_demo(load_settings(), seconds, symbols=symbols, rate=rate,
                      live_view=not headless))
