"""Unit tests for silvertine_streams.tables.sequence: one record of high-water marks
per partition, and the table that holds them.

The marks helpers run on a dict (what they need of a table); the declaration runs
on a real ``faust.App`` with the memory store, which no worker starts.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import faust
import pytest

from silvertine_streams.tables.sequence import save_marks, sequence_table, stored_marks

MARKS = {"feed/AAPL": 17, "feed/MSFT": 2**62, "other/AAPL": 1}


def test_a_partition_without_a_record_has_no_marks() -> None:
    assert stored_marks({}, 3) == {}
    assert stored_marks({"3": None}, 3) == {}


def test_saved_marks_are_read_back_by_partition() -> None:
    table: dict[str, Any] = {}
    save_marks(table, 3, MARKS)
    save_marks(table, 0, {"feed/IBM": 4})
    assert table.keys() == {"3", "0"}  # keyed by the partition's text, as JSON keeps it
    assert stored_marks(table, 3) == MARKS
    assert stored_marks(table, 0) == {"feed/IBM": 4}
    assert stored_marks(table, 1) == {}


def test_saving_replaces_the_whole_record() -> None:
    table: dict[str, Any] = {}
    save_marks(table, 3, MARKS)
    save_marks(table, 3, {"feed/AAPL": 18})
    assert stored_marks(table, 3) == {"feed/AAPL": 18}


def test_stored_marks_are_a_copy_the_caller_may_change() -> None:
    table: dict[str, Any] = {"3": dict(MARKS)}
    marks = stored_marks(table, 3)
    marks["feed/AAPL"] = 99
    marks["new/X"] = 1
    assert table["3"] == MARKS  # a change reaches the table only through save_marks


@pytest.fixture
def app() -> faust.App:
    return faust.App(f"t-{uuid4().hex[:8]}", broker="kafka://127.0.0.1:1", store="memory://")


def test_the_table_of_a_type_is_declared_on_the_app(app: faust.App) -> None:
    orders = sequence_table(app, "order", 6)
    fills = sequence_table(app, "fill", 6)
    assert list(app.tables) == ["sequence-order", "sequence-fill"]
    assert app.tables["sequence-order"] is orders and app.tables["sequence-fill"] is fills
    assert orders.partitions == 6
    changelog = orders.changelog_topic
    assert changelog.get_topic_name() == f"{app.conf.id}-sequence-order-changelog"
    assert changelog.partitions == 6


def test_marks_read_from_the_table_as_recovery_fills_it(app: faust.App) -> None:
    table = sequence_table(app, "order", 6)
    assert stored_marks(table, 3) == {}
    table.data["3"] = dict(MARKS)  # what changelog recovery writes into the store
    assert stored_marks(table, 3) == MARKS
    assert stored_marks(table, 4) == {}


def test_a_record_survives_the_changelog_codec(app: faust.App) -> None:
    # With value_type=dict Faust would take dict for a model class and fail to
    # decode every record on recovery ("type object 'dict' has no attribute 'from_data'").
    changelog = sequence_table(app, "order", 6).changelog_topic
    serializers = app.serializers
    raw_value = serializers.dumps_value(changelog.value_type, MARKS,
                                        serializer=changelog.value_serializer)
    raw_key = serializers.dumps_key(changelog.key_type, "3",
                                    serializer=changelog.key_serializer)
    assert serializers.loads_value(changelog.value_type, raw_value,
                                   serializer=changelog.value_serializer) == MARKS
    key = serializers.loads_key(changelog.key_type, raw_key, serializer=changelog.key_serializer)
    assert key == "3" and isinstance(key, str)
