"""``silvertine worker``: a Faust worker of the pipeline, under the supervisor.

Without ``--no-supervise`` this process is the supervisor
(:mod:`silvertine_streams.cli.supervisor`): it starts
``python -m silvertine_streams worker --no-supervise`` as a child and restarts
it when it exits on its own. With it, this process is the Faust worker.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from silvertine_streams.cli.common import load_settings
from silvertine_streams.cli.errors import fails_cleanly

if TYPE_CHECKING:
    from silvertine_streams.settings import Settings


@click.command()
@click.option("--no-supervise", is_flag=True, hidden=True,
              help="run the Faust worker in this process (what the supervisor starts)")
@fails_cleanly
def worker(no_supervise: bool) -> None:
    """Run a Faust worker of the pipeline (joins the consumer group SILVERTINE_APP_ID).

    The worker runs in a child process that is restarted when it exits on its own.
    """
    from silvertine_streams.embedded import resolve_settings_with_stack

    # Resolved in the supervisor, so a bad setting stops here with one line, and
    # every restarted child joins the same stack rather than looking for its own.
    settings = resolve_settings_with_stack(load_settings())
    if not no_supervise:
        sys.exit(_supervise_child(settings))

    import faust

    from silvertine_streams.app import create_app

    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level).execute_from_commandline()


def _supervise_child(settings: Settings) -> int:
    """Run ``worker --no-supervise`` with ``settings`` as a supervised child; its exit status."""
    from silvertine_streams.cli.supervisor import supervise
    from silvertine_streams.settings import settings_env

    child = [sys.executable, "-m", "silvertine_streams", "worker", "--no-supervise"]
    return supervise(child, settings_env(settings, os.environ))
