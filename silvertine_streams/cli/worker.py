"""``silvertine worker``: a Faust worker of the pipeline, under the supervisor.

Without ``--no-supervise`` this process is the supervisor
(:mod:`silvertine_streams.cli.supervisor`): it chooses the servers (starting the
embedded stack only when no URL is set) and starts
``python -m silvertine_streams worker --no-supervise`` as a child, restarting it
after a crash but never after a failed start. With it, this process checks the
servers (:mod:`silvertine_streams.cli.startup`) and is the Faust worker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from silvertine_streams.cli.common import config_option, load_settings, run
from silvertine_streams.cli.errors import debugging, fails_cleanly

if TYPE_CHECKING:
    from silvertine_streams.settings import Settings


@click.command()
@config_option
@click.option("--no-supervise", is_flag=True, hidden=True,
              help="run the Faust worker in this process (what the supervisor starts)")
@fails_cleanly
def worker(no_supervise: bool) -> None:
    """Run a Faust worker of the pipeline (joins the consumer group SILVERTINE_APP_ID).

    The worker runs in a child process that is restarted when it crashes after a
    successful start; a failed start ends the command with the failure's status.
    """
    from silvertine_streams.cli.startup import check_servers, choose_servers

    settings = load_settings()
    debug = debugging() or settings.log_level == "debug"
    if not no_supervise:
        # Chosen in the supervisor, so every restarted child joins the same servers.
        sys.exit(_supervise_child(choose_servers(settings), debug))
    run(lambda: check_servers(settings, debug=debug))
    _run_faust_worker(settings)


def _supervise_child(settings: Settings, debug: bool) -> int:
    """Run ``worker --no-supervise`` with ``settings`` as a supervised child; its exit status."""
    from silvertine_streams.cli.supervisor import supervise
    from silvertine_streams.settings import settings_env

    child = [sys.executable, "-m", "silvertine_streams", *(["--debug"] if debug else []),
             "worker", "--no-supervise"]
    return supervise(child, settings_env(settings, os.environ),
                     stop_timeout_s=settings.stop_timeout_s)


def _run_faust_worker(settings: Settings) -> None:
    """Run the Faust worker in this process; tell the supervisor once it has started."""
    import faust

    from silvertine_streams.app import create_app
    from silvertine_streams.observability.metrics import WORKER_RESTARTS
    from silvertine_streams.settings import supervisor_handshake

    ready_file, restarts = supervisor_handshake()
    WORKER_RESTARTS.inc(restarts)

    class _Worker(faust.Worker):
        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            if ready_file is not None:
                Path(ready_file).touch()

    worker_: Any = _Worker(create_app(settings), loglevel=settings.log_level)
    worker_.execute_from_commandline()
