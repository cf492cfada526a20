"""The ``silvertine`` click group and the command families registered on it.

Each family is one module of this package and imports the engine code it fronts
inside its commands, so ``silvertine --help`` loads none of it.
"""

from __future__ import annotations

import click

from silvertine_streams.cli.audit import audit
from silvertine_streams.cli.demo import demo
from silvertine_streams.cli.dlq import dlq
from silvertine_streams.cli.handlers import handlers
from silvertine_streams.cli.monitor import monitor
from silvertine_streams.cli.replay import replay
from silvertine_streams.cli.rewind import rewind
from silvertine_streams.cli.stack import stack
from silvertine_streams.cli.worker import worker

__all__ = ["FAMILIES", "main", "worker"]


@click.group()
@click.version_option(package_name="silvertine-streams")
@click.option("--debug", is_flag=True, help="show tracebacks with errors")
def main(debug: bool) -> None:
    """silvertine-streams: the event core of the Silvertine trading platform."""


FAMILIES: tuple[click.Command, ...] = (
    stack, worker, demo, replay, rewind, audit, dlq, handlers, monitor,
)
"""Every command family of ``silvertine``, in the order a reader meets them."""

for _family in FAMILIES:
    main.add_command(_family)


if __name__ == "__main__":  # pragma: no cover
    main()
