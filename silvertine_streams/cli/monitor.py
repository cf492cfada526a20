"""``silvertine monitor``: a live terminal dashboard of the workers' metrics."""

from __future__ import annotations

import sys

import click

from silvertine_streams.cli.common import config_option, load_settings
from silvertine_streams.cli.errors import fails_cleanly


@click.command()
@config_option
@click.option("--url", "urls", multiple=True,
              help="metrics endpoint (repeat for several workers; default: "
                   "http://127.0.0.1:$SILVERTINE_METRICS_PORT/metrics)")
@click.option("--once", is_flag=True, help="print one plain-text snapshot and exit")
@click.option("--interval", default=1.0, show_default=True, type=float,
              help="seconds between scrapes (rates are over this interval)")
@fails_cleanly
def monitor(urls: tuple[str, ...], once: bool, interval: float) -> None:
    """A live terminal dashboard of the workers' metrics (Ctrl-C quits)."""
    from rich.console import Console

    from silvertine_streams.observability.monitor import run_monitor

    if interval < 0:
        raise click.BadParameter("must be >= 0", param_hint="--interval")
    if not urls:
        urls = (f"http://127.0.0.1:{load_settings().metrics_port}/metrics",)
    # --once is read by scripts and tests: a fixed width keeps its lines whole.
    console = Console(width=200) if once else Console()
    sys.exit(run_monitor(list(urls), interval_s=interval if (once or interval > 0) else 1.0,
                         once=once, console=console))
