"""``silvertine worker``, unchanged, plus a start mark for the bench's clock.

Run as ``python -m bench.silvertine_worker`` with the usual ``SILVERTINE_*``
variables and ``BENCH_MARK_FILE``. The first call of
``EventPipeline.process`` (the agent handing its first consumed message to the
pipeline) writes ``time.time()`` to the mark file; the wrapper then removes
itself, so every later message runs exactly the product's code.
"""

from __future__ import annotations

import os
import time
from typing import Any


def _install_mark(path: str) -> None:
    from silvertine_streams.agents.pipeline import EventPipeline

    original = EventPipeline.process

    async def process(self: Any, *args: Any, **kwargs: Any) -> Any:
        EventPipeline.process = original  # type: ignore[method-assign]
        stamp = time.time()
        tmp = f"{path}.tmp"
        with open(tmp, "w") as fh:
            fh.write(repr(stamp))
        os.replace(tmp, path)
        return await original(self, *args, **kwargs)

    EventPipeline.process = process  # type: ignore[method-assign]


def main() -> None:
    mark = os.environ.get("BENCH_MARK_FILE")
    if mark:
        _install_mark(mark)
    from silvertine_streams.cli import main as cli

    cli(["worker"], prog_name="silvertine")


if __name__ == "__main__":
    main()
