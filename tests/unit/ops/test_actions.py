"""The operator-action record: its stream fields, read back, and never a secret in it."""

from __future__ import annotations

import json
import os
import pwd
import socket
from datetime import UTC, datetime

import pytest

from silvertine_streams.ops.actions import (
    MAXLEN,
    ActionRecord,
    _preceding_id,
    from_fields,
    hide_secrets,
    operator,
    summary_line,
    to_fields,
)

STARTED = datetime(2026, 3, 1, 14, 30, 5, 250_000, tzinfo=UTC)


def record(**changes: object) -> ActionRecord:
    fields: dict[str, object] = {
        "action": "dlq purge", "outcome": "done", "user": "alice", "host": "desk-1", "pid": 4242,
        "command": "silvertine dlq purge --before 2026-03-01 --yes",
        "args": {"before": "2026-03-01", "reason": None, "yes": True},
        "counts": {"matched": 3, "purged": 3}, "started_at": STARTED, "duration_s": 0.25,
    }
    fields.update(changes)
    return ActionRecord(**fields)  # type: ignore[arg-type]  # the test's own values


def test_a_record_is_flat_text_fields_and_reads_back_the_same() -> None:
    fields = to_fields(record())

    assert all(isinstance(v, str) for v in fields.values())
    assert fields["action"] == "dlq purge" and fields["outcome"] == "done"
    assert (fields["user"], fields["host"], fields["pid"]) == ("alice", "desk-1", "4242")
    assert json.loads(fields["counts"]) == {"matched": 3, "purged": 3}
    assert list(json.loads(fields["counts"])) == ["matched", "purged"]  # as the command said
    assert fields["started_at"] == "2026-03-01T14:30:05.250000+00:00"
    back = from_fields("1772375405300-0", {k.encode(): v.encode() for k, v in fields.items()})
    assert back == record(entry_id="1772375405300-0")
    assert back.recorded_at == datetime(2026, 3, 1, 14, 30, 5, 300_000, tzinfo=UTC)
    assert back.who == "alice@desk-1"
    assert summary_line(back) == "matched=3 purged=3"


def test_refused_and_failed_records_keep_their_reason() -> None:
    refused = to_fields(record(outcome="refused", reason="refusing to delete 3 dead letter(s) "
                                                      "without --yes", counts={"matched": 3}))
    assert from_fields("1-0", refused).reason.endswith("without --yes")
    failed = from_fields("1-0", to_fields(record(outcome="failed", reason="cannot reach x")))
    assert (failed.outcome, failed.reason) == ("failed", "cannot reach x")


@pytest.mark.parametrize(("value", "shown"), [
    ("redis://ops:hunter2@10.0.0.5:6379/0", "redis://ops:***@10.0.0.5:6379/0"),
    ("kafka://broker:9092?password=hunter2&x=1", "kafka://broker:9092?password=***&x=1"),
    (["a", "rediss://u:hunter2@h:1/0"], ["a", "rediss://u:***@h:1/0"]),
    (("x", 1, None, True, 2.5), ["x", 1, None, True, 2.5]),
    ({"nested": {"url": "redis://:hunter2@h/0"}}, {"nested": {"url": "redis://:***@h/0"}}),
])
def test_secrets_in_values_are_hidden(value: object, shown: object) -> None:
    assert hide_secrets(value) == shown


def test_arguments_named_as_secrets_are_hidden_whole() -> None:
    hidden = hide_secrets({"password": "hunter2", "sasl_password": "x", "api_key": "k",
                           "token": None, "keys": "order", "reason": "invalid"})
    assert hidden == {"password": "***", "sasl_password": "***", "api_key": "***",
                      "token": None, "keys": "order", "reason": "invalid"}


def test_nothing_secret_reaches_the_stream() -> None:
    secret = "hunter2"
    fields = to_fields(record(
        command=f"silvertine dlq purge --reason redis://ops:{secret}@h:1/0",
        args={"reason": f"redis://ops:{secret}@h:1/0", "token": secret,
              "kafka": f"kafka://h:1?token={secret}"},
        reason=f"cannot reach redis://ops:{secret}@h:1/0: refused",
        outcome="failed"))
    assert not any(secret in value for value in fields.values()), fields
    assert "redis://ops:***@h:1/0" in fields["command"]
    assert json.loads(fields["args"])["token"] == "***"


def test_a_damaged_entry_is_read_with_empty_values_not_an_error() -> None:
    back = from_fields("1772375405300-0", {b"action": b"rewind", b"outcome": b"exploded",
                                           b"args": b"not json", b"counts": b"[1, 2]",
                                           b"pid": b"x", b"started_at": b"yesterday"})
    assert back.action == "rewind"
    assert back.outcome == "failed"  # an unknown outcome is never shown as done
    assert (back.args, back.counts, back.pid, back.user) == ({}, {}, 0, "?")
    assert back.started_at == back.recorded_at


def test_the_operator_is_the_real_user_and_this_host() -> None:
    user, host, pid = operator()
    assert user == pwd.getpwuid(os.getuid()).pw_name
    assert (host, pid) == (socket.gethostname(), os.getpid())


def test_the_stream_bound_is_generous() -> None:
    assert MAXLEN == 100_000


@pytest.mark.parametrize(("entry_id", "before"), [
    ("1700000000000-5", "1700000000000-4"),
    ("1700000000000-0", f"1699999999999-{2**64 - 1}"),
    ("0-0", None),
])
def test_paging_backwards_steps_to_the_id_just_before(entry_id: str, before: str | None) -> None:
    assert _preceding_id(entry_id) == before
