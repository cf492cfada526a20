"""Marks written from a batch, outside any Faust stream: the table's own write path with a
stand-in current event (the store, and one changelog record to the partition's changelog).

Runs on a real ``faust.App`` with the memory store, which no worker starts: the
changelog record stays in the producer's buffer, where it is inspected.
"""

from __future__ import annotations

from uuid import uuid4

import faust
import pytest
from faust.streams import current_event

from silvertine_streams.tables.sequence import save_marks_from_batch, sequence_table, stored_marks

MARKS = {"feed/AAPL": 17, "feed/MSFT": 2}


@pytest.fixture
def app() -> faust.App:
    return faust.App(f"t-{uuid4().hex[:8]}", broker="kafka://127.0.0.1:1", store="memory://")


async def test_marks_from_a_batch_reach_the_store_and_the_partitions_changelog(
    app: faust.App,
) -> None:
    table = sequence_table(app, "order", 6)
    with pytest.raises(TypeError, match="outside of stream iteration"):
        table["3"] = MARKS  # what a plain write outside a stream does
    save_marks_from_batch(table, "silvertine.order", 3, MARKS)
    assert stored_marks(table, 3) == MARKS
    pending = app.producer.buffer.pending
    assert pending.qsize() == 1
    sent = pending.get_nowait().message
    assert sent.channel.get_topic_name() == f"{app.conf.id}-sequence-order-changelog"
    assert (sent.partition, sent.key, sent.value) == (3, b'"3"', b'{"feed/AAPL":17,"feed/MSFT":2}')
    assert current_event() is None  # the stand-in event does not leak out
