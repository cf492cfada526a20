"""Sequence high-water marks: one table per event type, one record per partition.

The record maps each (source, symbol) stream of the partition to the highest
sequence released from it. It is written once per message that moved a mark,
never once per event: every table write is also a changelog record, and one per
event would halve throughput (DESIGN §5).
"""

from __future__ import annotations

from typing import Any

import faust


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
    """Write a partition's marks (call from the agent: Faust ties writes to a message)."""
    table[str(partition)] = marks
