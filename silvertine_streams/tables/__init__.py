"""The Faust tables of a worker (changelog-backed derived state; the Redis log is the truth)."""

from __future__ import annotations

from silvertine_streams.tables.sequence import (
    save_marks,
    save_marks_from_batch,
    sequence_table,
    stored_marks,
)

__all__ = ["save_marks", "save_marks_from_batch", "sequence_table", "stored_marks"]
