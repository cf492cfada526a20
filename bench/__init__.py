"""Benchmarks of silvertine-streams (issue 3): ``make bench`` / ``python -m bench``.

Layout, so later scenarios slot in beside the first one:

* :mod:`bench.harness`  the embedded stack, subprocesses (stopped by PID only),
  start marks, ``XLEN`` polling and per-process CPU accounting.
* :mod:`bench.measure`  counting a topic by reading it, resetting Redis between
  runs, and timing a child from its first consumed message to ``XLEN == N``.
* :mod:`bench.report`   samples, medians, ratios, machine facts, and the
  ``RESULTS.md`` writer every scenario shares.
* :mod:`bench.profiling` py-spy sampling of a worker, folded into top self/total time.
* one module per scenario, each with ``NAME``, ``TITLE`` and
  ``async def run(ctx) -> ScenarioReport`` (see :mod:`bench.pipeline_throughput`),
  listed in :data:`bench.__main__.SCENARIOS`; hand-written analysis beside it in
  ``bench/notes/<scenario>.md`` is copied into ``RESULTS.md``.
* the programs the scenarios run as subprocesses: ``bench/silvertine_worker.py``
  (the product worker plus a start mark and experiment knobs), :mod:`bench.plain_agent`
  (the baseline Faust app), :mod:`bench.raw_floor` (aiokafka → pipelined XADD), and
  ``bench/quix_consumer.py`` (Quix Streams 3, a peer, run from the venv :mod:`bench.peers`
  builds: ``bench/.venv-quix``).
* :mod:`bench.soak` (``make soak``): a separate, long run (20 min by default) sampling
  the memory of the worker, Redis and the broker under steady load; its section of
  ``RESULTS.md`` sits between soak markers that ``python -m bench`` keeps.
"""
