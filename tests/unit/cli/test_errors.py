"""Unit tests for silvertine_streams.cli.errors: our errors end a command with one
line on stderr and exit status 2; anything else is left alone."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from silvertine_streams.cli.errors import CONFIG_ERROR_EXIT, fails_cleanly
from silvertine_streams.errors import ConfigError, SilvertineError


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


def test_exit_status_2_is_the_configuration_error_status() -> None:
    # The supervisor does not restart a child that exits with it.
    assert CONFIG_ERROR_EXIT == 2


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
def test_our_errors_are_one_line_on_stderr_and_exit_status_2(fail: str, line: str) -> None:
    result = CliRunner().invoke(command, ["--fail", fail])
    assert result.exit_code == CONFIG_ERROR_EXIT
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
