"""Unit tests for silvertine_streams.cli.errors: our errors end a command with one
line on stderr and their class's exit status; ``--debug`` shows the traceback;
anything else is left alone."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from silvertine_streams.cli.errors import (
    CONFIG_ERROR_EXIT,
    STARTUP_FAILURE_EXITS,
    exit_status,
    fails_cleanly,
)
from silvertine_streams.errors import (
    ConfigError,
    CredentialsRefused,
    EmbeddedServerError,
    ServerUnavailable,
    SilvertineError,
    TopicMismatch,
    UnknownSetting,
)


@click.command()
@click.option("--fail", type=click.Choice(["ours", "config", "other", "no"]), default="no")
@fails_cleanly
def command(fail: str) -> None:
    """A command that fails the way it is asked to."""
    if fail == "ours":
        raise SilvertineError("no redis to talk to")
    if fail == "config":
        raise ConfigError("SILVERTINE_PARTITIONS", "x", "int >= 1")
    if fail == "other":
        raise KeyError("a bug")
    click.echo("worked")


@pytest.mark.parametrize(("error", "status"), [
    (SilvertineError("x"), 1),
    (ConfigError("SILVERTINE_PARTITIONS", "x", "int"), 2),
    (UnknownSetting("SILVERTINE_PARTITONS", "SILVERTINE_PARTITIONS"), 2),
    (ServerUnavailable("redis://h:1/0", "refused"), 3),
    (CredentialsRefused("redis://h:1/0", "refused"), 4),
    (TopicMismatch("silvertine.order", 4, 8), 5),
    (EmbeddedServerError("redis", "no binary"), 6),
])
def test_each_error_class_has_its_documented_exit_status(error: SilvertineError,
                                                         status: int) -> None:
    assert exit_status(error) == status
    # Start-up failures (all but the catch-all) are never restarted by the supervisor.
    assert (status in STARTUP_FAILURE_EXITS) == (status != 1)


def test_a_command_that_succeeds_is_untouched() -> None:
    result = CliRunner().invoke(command, [])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "worked\n", "")


@pytest.mark.parametrize(
    ("fail", "line"),
    [
        ("ours", "silvertine: no redis to talk to\n"),
        ("config", "silvertine: SILVERTINE_PARTITIONS='x' is not valid; accepted: int >= 1\n"),
    ],
)
def test_our_errors_are_one_line_on_stderr_with_their_status(fail: str, line: str) -> None:
    result = CliRunner().invoke(command, ["--fail", fail])
    assert result.exit_code == (CONFIG_ERROR_EXIT if fail == "config" else 1)
    assert result.stderr == line  # no traceback
    assert result.stdout == ""


def test_other_errors_are_not_hidden() -> None:
    result = CliRunner().invoke(command, ["--fail", "other"])
    assert result.exit_code == 1
    assert isinstance(result.exception, KeyError)


def test_the_wrapped_command_keeps_its_name_and_help() -> None:
    def run_thing() -> int:
        """Run the thing."""
        return 5

    wrapped = fails_cleanly(run_thing)
    assert (wrapped.__name__, wrapped.__doc__) == ("run_thing", "Run the thing.")
    assert wrapped() == 5
    assert "A command that fails the way it is asked to." in CliRunner().invoke(
        command, ["--help"]).output


@click.group()
@click.option("--debug", is_flag=True)
def root(debug: bool) -> None:
    """A root group with --debug, as ``silvertine`` has."""


root.add_command(command)


def test_debug_shows_the_traceback_instead_of_one_line() -> None:
    quiet = CliRunner().invoke(root, ["command", "--fail", "config"])
    assert quiet.exit_code == CONFIG_ERROR_EXIT and "Traceback" not in quiet.output
    loud = CliRunner().invoke(root, ["--debug", "command", "--fail", "config"])
    assert isinstance(loud.exception, ConfigError)  # re-raised, not turned into a line
