"""``silvertine worker``, unchanged, plus a start mark for the bench's clock.

With ``BENCH_SUPERVISE=1`` it runs as ``silvertine worker`` does when the product
has a supervisor (``silvertine_streams.cli.supervisor``): the supervisor runs this
script again, unsupervised, as its child and restarts it when it exits on its
own. Unsupervised it runs the worker itself (``--no-supervise``).

Run as a script, ``python bench/silvertine_worker.py``, with the usual ``SILVERTINE_*``
variables and ``BENCH_MARK_FILE``. A Faust sensor added to the app writes
``time.time()`` to the mark file when the first Kafka message enters an agent's
stream (``on_stream_event_in``), or the first batch enters a pipeline (a worker
that reads batches beneath Faust's streams); after that it costs one flag check
per message or batch. The product's code is not touched, so a scratch copy of the product
with another agent loop is timed the same way: run as a script (not ``-m``),
this file imports nothing from ``bench`` and ``silvertine_streams`` comes from
the first source tree on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from typing import Any


def _install_mark(path: str) -> None:
    from faust.sensors import Sensor

    import silvertine_streams.app as app_module

    freeze = bool(os.environ.get("BENCH_GC_FREEZE"))

    class FirstEventMark(Sensor):
        marked = False

        def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
            if not self.marked:
                self.marked = True
                if freeze:
                    # Experiment knob (``BENCH_GC_FREEZE=1``): move every object alive
                    # after start-up out of the GC's reach, as a worker could once started.
                    import gc

                    gc.freeze()
                tmp = f"{path}.tmp"
                with open(tmp, "w") as fh:
                    fh.write(repr(time.time()))
                os.replace(tmp, path)

    create_app = app_module.create_app
    mark = FirstEventMark()

    def create_app_with_mark(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.sensors.add(mark)
        return app

    app_module.create_app = create_app_with_mark  # type: ignore[assignment]

    # A worker that reads batches beneath Faust's streams never calls the stream
    # sensors: mark its first batch instead (a tree without batches is unaffected).
    from silvertine_streams.agents import pipeline as pipeline_module

    pipeline_class = pipeline_module.EventPipeline
    process_batch = getattr(pipeline_class, "process_batch", None)
    if process_batch is not None:
        async def process_batch_with_mark(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not mark.marked:
                mark.on_stream_event_in(None, 0, None, None)
            return await process_batch(self, *args, **kwargs)

        pipeline_class.process_batch = process_batch_with_mark


def _install_gc_stats() -> None:
    """Experiment knob (``BENCH_GC_STATS=1``): log the cyclic GC's collections and time
    per generation when the worker exits (the bench's log of that run)."""
    import atexit
    import gc

    started: list[float] = [0.0]
    totals = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            entry = totals[info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - started[0]

    def report() -> None:
        text = ", ".join(f"gen{g}: {n} collections {t * 1000:.0f} ms"
                         for g, (n, t) in totals.items())
        print(f"bench: gc {text}", flush=True)

    gc.callbacks.append(callback)
    atexit.register(report)


def _supervise() -> bool:
    """Run this script under the product's supervisor, if it has one; True if it did."""
    try:
        from silvertine_streams.cli.supervisor import supervise
    except ImportError:
        return False
    import sys

    env = dict(os.environ, BENCH_SUPERVISE="")
    print("bench: worker under silvertine_streams.cli.supervisor", flush=True)
    sys.exit(supervise([sys.executable, os.path.abspath(__file__)], env))


def main() -> None:
    if os.environ.get("BENCH_SUPERVISE") and _supervise():
        return
    # Experiment knob (``--experiment NAME=.,BENCH_SWITCH_INTERVAL_S=0.0005``): the GIL
    # switch interval, since Faust's consumer thread and the agent's thread share the GIL.
    interval = os.environ.get("BENCH_SWITCH_INTERVAL_S")
    if interval:
        import sys

        sys.setswitchinterval(float(interval))
    # Experiment knob (``BENCH_GC_THRESHOLD=50000:20:100``): the cyclic GC's thresholds,
    # since every decoded envelope allocates thousands of tracked objects.
    thresholds = os.environ.get("BENCH_GC_THRESHOLD")
    if thresholds:
        import gc

        gc.set_threshold(*(int(x) for x in thresholds.split(":")))
    if os.environ.get("BENCH_GC_STATS"):
        _install_gc_stats()
    mark = os.environ.get("BENCH_MARK_FILE")
    if mark:
        _install_mark(mark)
    import silvertine_streams
    from silvertine_streams.cli import main as cli

    print(f"bench: silvertine_streams from {os.path.dirname(silvertine_streams.__file__)}",
          flush=True)

    # The process under test is the worker itself: with a supervisor in between, the
    # mark, the CPU accounting and `kill -9` would all hit the supervisor.
    from silvertine_streams.cli.main import worker

    unsupervised = any(p.name == "no_supervise" for p in worker.params)
    cli(["worker", *(["--no-supervise"] if unsupervised else [])], prog_name="silvertine")


if __name__ == "__main__":
    main()
