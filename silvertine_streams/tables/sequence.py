"""Sequence high-water marks: one table per event type, one record per partition.

The record maps each (source, symbol) stream of the partition to the highest
sequence released from it and made durable. The table is a cache of what the
canonical log holds; it is written once per changed partition *before each
offset commit* (see :mod:`~silvertine_streams.agents.batch_loop`), never once
per event or per message: every table write is also a changelog record that
costs Faust 130-250 µs (DESIGN §5), and one per event would halve throughput.
Written before the commit (and flushed with it), the marks never lag a
committed offset, which is what recovery needs: a worker that takes the
partition over resumes at the committed offset with marks at least as new.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import Any

import faust
from faust.streams import _current_event
from faust.types.tuples import TP, ConsumerMessage


def sequence_table(app: faust.App, type_name: str, partitions: int) -> Any:
    """Declare the sequence table of ``type_name`` on ``app``.

    No ``key_type``/``value_type``: Faust then uses JSON. With ``value_type=dict``
    Faust takes ``dict`` for a model class, and recovery fails on every restart
    ("type object 'dict' has no attribute 'from_data'").
    """
    return app.Table(f"sequence-{type_name}", default=dict, partitions=partitions)


def stored_marks(table: Any, partition: int) -> dict[str, int]:
    """Return the high-water marks a partition's record holds (empty if none)."""
    return dict(table.get(str(partition)) or {})


def save_marks(table: Any, partition: int, marks: dict[str, int]) -> None:
    """Write a partition's marks (inside a Faust stream: see :func:`save_marks_from_batch`)."""
    table[str(partition)] = marks


def save_marks_from_batch(table: Any, topic: str, partition: int, marks: dict[str, int]) -> None:
    """Write a partition's marks through the table's own write path, outside any stream.

    Faust ties a table write to the message being processed: it takes the
    changelog partition (and, with RocksDB, the store's partition) from the
    stream's *current event*. Batches are not read through a Faust stream, so
    the write runs in a context whose current event is a stand-in message of
    ``topic``/``partition``. The changelog record is sent soon; Faust flushes
    its producer before it commits offsets.
    """
    message = ConsumerMessage(topic, partition, -1, 0.0, 0, None, None, None, None,
                              tp=TP(topic, partition))
    event = faust.Event(table.app, None, None, None, message)

    def write() -> None:
        _current_event.set(weakref.ref(event))
        save_marks(table, partition, marks)

    contextvars.copy_context().run(write)
