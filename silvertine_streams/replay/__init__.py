"""Replay: the canonical log at a chosen speed.

Two ways to see events again (DESIGN §1); this package is the first:

* :func:`replay` reads ``log:<type>`` by log time, type, symbol and filter and
  delivers the events, marked ``metadata.replay``, to a sink of your choice —
  never back into the canonical log.
* :func:`silvertine_streams.ops.rewind.rewind_group` moves the workers' committed
  Kafka offsets to a time, so the next worker start reprocesses from there (the
  log's dedupe keeps it unchanged).

Example::

    from silvertine_streams.replay import replay

    summary = await replay(redis, ["order", "fill"], since=start, where="quantity > 100",
                           speed=2.0, to=my_handler)
"""

from __future__ import annotations

from silvertine_streams.replay.reader import LogPage, read_pages
from silvertine_streams.replay.replayer import (
    ReplayError,
    ReplayProgress,
    ReplaySummary,
    Speed,
    parse_speed,
    print_sink,
    replay,
)
from silvertine_streams.replay.targets import HandlerSink, TopicSink, refuse_engine_topic
from silvertine_streams.replay.where import InvalidFilter, compile_where

__all__ = [
    "HandlerSink",
    "InvalidFilter",
    "LogPage",
    "ReplayError",
    "ReplayProgress",
    "ReplaySummary",
    "Speed",
    "TopicSink",
    "compile_where",
    "parse_speed",
    "print_sink",
    "read_pages",
    "refuse_engine_topic",
    "replay",
]
