"""Audited actions: asked before (``--yes``, a prompt, or a refusal), recorded once after.

A small command stands in for ``dlq purge`` and friends; the record it would
write is captured instead of sent to Redis (the integration tests send it).
"""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

import silvertine_streams.cli.actions as actions_module
from silvertine_streams.cli.actions import audited, command_line, confirm
from silvertine_streams.cli.errors import fails_cleanly
from silvertine_streams.errors import ActionRefused, ServerUnavailable
from silvertine_streams.ops.actions import ActionRecord
from silvertine_streams.settings import load_settings

SETTINGS = load_settings(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1


@click.group()
def ops() -> None:
    """A command family."""


@ops.command("wipe")
@click.argument("ids", nargs=-1)
@click.option("--before", required=True)
@click.option("--reason")
@click.option("--type", "types", multiple=True)
@click.option("--limit", default=50)
@click.option("--progress/--no-progress", default=None)
@click.option("--fail", type=click.Choice(["none", "server", "refused", "bug"]), default="none")
@click.option("--yes", is_flag=True)
@fails_cleanly
def wipe(ids: tuple[str, ...], before: str, reason: str | None, types: tuple[str, ...],
         limit: int, progress: bool | None, fail: str, yes: bool) -> None:
    """Delete things, as an audited action."""
    with audited(SETTINGS, "ops wipe", group="g-1") as action:
        action.counts["matched"] = 3
        if fail == "refused":
            raise ActionRefused("workers are running")
        confirm("delete 3 things", yes)
        if fail == "server":
            raise ServerUnavailable("redis://u:hunter2@h:1/0", "connection refused")
        if fail == "bug":
            raise KeyError("a bug")
        action.counts["deleted"] = 3
        WIPED.append(3)
    click.echo("deleted 3")


WIPED: list[int] = []


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[ActionRecord]:
    """The records the command writes, in order (nothing reaches Redis)."""
    WIPED.clear()
    records: list[ActionRecord] = []
    monkeypatch.setattr(actions_module, "_write", lambda settings, record: records.append(record))
    return records


def invoke(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(ops, ["wipe", "--before", "2026-01-01", *args], input=stdin)


def test_with_yes_it_acts_and_records_done_with_its_counts(written: list[ActionRecord]) -> None:
    result = invoke("--yes")

    assert (result.exit_code, result.stdout) == (0, "deleted 3\n")
    assert WIPED == [3]
    (record,) = written
    assert (record.action, record.outcome, record.reason) == ("ops wipe", "done", "")
    assert record.counts == {"matched": 3, "deleted": 3}
    assert record.args["group"] == "g-1" and record.args["yes"] is True
    assert record.command == "silvertine wipe --before 2026-01-01 --yes"
    assert record.duration_s >= 0 and record.pid > 0 and record.user and record.host


def test_without_yes_and_without_a_terminal_it_refuses_in_one_line_with_status_2(
        written: list[ActionRecord]) -> None:
    result = invoke()  # CliRunner's stdin is not a terminal

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "silvertine: refusing to delete 3 things without --yes (no terminal to ask on); "
        "nothing was changed"]
    assert WIPED == []
    (record,) = written
    assert (record.outcome, record.counts) == ("refused", {"matched": 3})
    assert "without --yes" in record.reason


@pytest.mark.parametrize(("answer", "status", "outcome", "wiped"), [
    ("y\n", 0, "done", [3]),
    ("n\n", 1, "refused", []),
    ("\n", 1, "refused", []),  # the default is no
])
def test_at_a_terminal_it_asks(written: list[ActionRecord], monkeypatch: pytest.MonkeyPatch,
                               answer: str, status: int, outcome: str, wiped: list[int]) -> None:
    monkeypatch.setattr(actions_module, "stdin_is_terminal", lambda: True)

    result = invoke(stdin=answer)

    assert result.exit_code == status, result.output
    assert "Delete 3 things? [y/N]" in result.stdout
    assert wiped == WIPED
    assert [r.outcome for r in written] == [outcome]
    if outcome == "refused":
        assert written[0].reason == "declined: nothing was changed"
        assert "declined" in result.stderr


def test_the_engine_refusing_is_recorded_as_refused(written: list[ActionRecord]) -> None:
    result = invoke("--yes", "--fail", "refused")

    assert result.exit_code == 2 and "workers are running" in result.stderr
    assert [(r.outcome, r.reason) for r in written] == [("refused", "workers are running")]


def test_a_failure_is_recorded_with_its_reason_and_keeps_its_status(
        written: list[ActionRecord]) -> None:
    result = invoke("--yes", "--fail", "server")

    assert result.exit_code == 3
    (record,) = written
    assert record.outcome == "failed"
    assert "connection refused" in record.reason and "hunter2" not in record.reason

    bug = invoke("--yes", "--fail", "bug")
    assert isinstance(bug.exception, KeyError)
    assert [r.outcome for r in written] == ["failed", "failed"]


def test_arguments_too_malformed_to_parse_leave_no_record(written: list[ActionRecord]) -> None:
    result = CliRunner().invoke(ops, ["wipe", "--limit", "many"])

    assert result.exit_code == 2
    assert written == []


def test_the_command_line_is_rebuilt_from_what_was_parsed() -> None:
    seen: list[str] = []

    @click.group()
    def main() -> None:
        """The root command."""

    @main.command("rewind")
    @click.argument("ids", nargs=-1)
    @click.option("--to", "to", required=True)
    @click.option("-t", "--type", "types", multiple=True)
    @click.option("--limit", default=50)
    @click.option("--progress/--no-progress", default=None)
    @click.option("--yes", is_flag=True)
    def command(**params: object) -> None:
        seen.append(command_line(click.get_current_context()))

    CliRunner().invoke(main, ["rewind", "a b", "-t", "order", "--type", "fill", "--to",
                                 "redis://u:hunter2@h/0", "--no-progress", "--limit", "50"])
    assert seen == ["silvertine rewind 'a b' --to 'redis://u:***@h/0' --type order --type fill "
                    "--no-progress"]


def test_a_record_that_cannot_be_written_is_a_warning_not_the_commands_failure() -> None:
    # Nothing listens on port 1: the write fails, the action's own status stands.
    WIPED.clear()
    result = invoke("--yes")

    assert result.exit_code == 0 and WIPED == [3]
    assert "warning: ops wipe (done) was not recorded in the audit trail" in result.stderr


def test_every_refusal_of_an_operator_action_ends_with_status_2() -> None:
    from silvertine_streams.cli.actions import NotConfirmed
    from silvertine_streams.cli.errors import exit_status
    from silvertine_streams.ops.rewind import RewindRefused, WorkersRunning
    from silvertine_streams.replay import InvalidFilter, ReplayError

    refusals = [ActionRefused("x"), NotConfirmed("x"), RewindRefused("x"),
                WorkersRunning("g", ["m"], ["h-1"]), ReplayError("x"), InvalidFilter("f", "x")]
    assert [exit_status(error) for error in refusals] == [2] * len(refusals)
