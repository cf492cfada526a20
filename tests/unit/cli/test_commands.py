"""The ``silvertine`` command tree: every command is registered and shows its help.

Pure: click's ``CliRunner`` in this process, no servers. A family module that
is no longer registered on the group, or a command that fails to build its
help, fails here rather than in the integration suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import silvertine_streams
from silvertine_streams.cli import main
from silvertine_streams.cli.audit import audit
from silvertine_streams.cli.demo import demo
from silvertine_streams.cli.dlq import dlq
from silvertine_streams.cli.handlers import handlers
from silvertine_streams.cli.main import FAMILIES
from silvertine_streams.cli.monitor import monitor
from silvertine_streams.cli.replay import replay
from silvertine_streams.cli.rewind import rewind
from silvertine_streams.cli.stack import stack
from silvertine_streams.cli.worker import worker

EXPECTED = {
    ("stack",), ("stack", "up"), ("stack", "down"), ("stack", "status"),
    ("worker",), ("demo",), ("replay",), ("rewind",), ("audit",),
    ("dlq",), ("dlq", "list"), ("dlq", "requeue"), ("dlq", "purge"),
    ("handlers",), ("handlers", "list"), ("handlers", "forget"),
    ("monitor",),
}
"""Every command path under ``silvertine``; a new command is added here on purpose."""


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _paths(command, (*prefix, name))


def test_the_command_tree_is_exactly_the_expected_commands() -> None:
    assert set(_paths(main)) == EXPECTED


def test_each_family_module_s_command_is_the_one_registered_under_its_name() -> None:
    # One module per family (cli/<name>.py defines the command <name>), all on the group.
    by_module = {"stack": stack, "worker": worker, "demo": demo, "replay": replay,
                 "rewind": rewind, "audit": audit, "dlq": dlq, "handlers": handlers,
                 "monitor": monitor}
    assert tuple(by_module.values()) == FAMILIES
    for name, command in by_module.items():
        assert command.name == name
        assert main.commands[name] is command, name


@pytest.mark.parametrize("path", [(), *sorted(EXPECTED)], ids=lambda p: " ".join(p) or "main")
def test_every_command_shows_its_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert f"main {' '.join(path)}".rstrip() in result.output.splitlines()[0]


def test_a_group_lists_its_subcommands_in_its_help() -> None:
    output = CliRunner().invoke(main, ["--help"]).output
    for (name,) in (path for path in EXPECTED if len(path) == 1):
        assert f"  {name} " in output, name


def test_the_bench_finds_the_worker_and_its_hidden_no_supervise_flag() -> None:
    # bench/silvertine_worker.py imports the worker from cli.main and runs it unsupervised.
    from silvertine_streams.cli.main import worker as bench_worker

    assert main.commands["worker"] is bench_worker is worker
    flag = next(p for p in worker.params if p.name == "no_supervise")
    assert isinstance(flag, click.Option) and flag.hidden
    assert "--no-supervise" not in CliRunner().invoke(main, ["worker", "--help"]).output


def test_a_bad_setting_is_one_line_and_exit_status_2() -> None:
    result = CliRunner().invoke(main, ["stack", "status"],
                                env={"SILVERTINE_PARTITIONS": "abc"})
    assert result.exit_code == 2
    assert "SILVERTINE_PARTITIONS" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_help_loads_no_engine_library() -> None:
    # The families import what they front inside their commands; `silvertine --help`
    # must stay fast. A fresh interpreter: this one has imported everything already.
    heavy = ("redis", "rich", "aiokafka", "faust", "pydantic_settings",
             "silvertine_streams.settings")
    probe = ("import sys\nfrom silvertine_streams.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    # The child must import this checkout, not whichever copy the venv has installed.
    root = str(Path(silvertine_streams.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True, env=env)
    assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("value", ["order:fast", "order=fast", "orders=critical"])
def test_a_bad_lane_stops_the_worker_before_any_server_is_started(
        value: str, tmp_path: Path) -> None:
    # No supervisor, no embedded stack: the data dir the stack would create stays absent.
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "silvertine_streams", "worker"],
        env={**os.environ, "SILVERTINE_LANES": value, "SILVERTINE_DATA_DIR": str(data_dir)},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "SILVERTINE_LANES" in lines[0], lines
    assert not data_dir.exists()


GROUPS = {("stack",), ("dlq",), ("handlers",)}
"""Command groups: they load no settings themselves, their subcommands do."""


@pytest.mark.parametrize("path", sorted(p for p in EXPECTED if p not in GROUPS), ids=" ".join)
def test_every_command_that_loads_settings_takes_a_config_file(path: tuple[str, ...]) -> None:
    output = CliRunner().invoke(main, [*path, "--help"]).output
    assert "--config PATH" in output and "SILVERTINE_CONFIG" in output


def test_an_unknown_key_in_the_config_file_is_one_line_and_exit_status_2(
        tmp_path: Path) -> None:
    config = tmp_path / "engine.yaml"
    config.write_text("redis:\n  urll: redis://127.0.0.1:1/0\n")
    result = CliRunner().invoke(main, ["stack", "status", "--config", str(config)],
                                env={"SILVERTINE_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"silvertine: {config}: redis.urll is not a setting; did you mean redis.url? "
        "(the shipped config/event_engine.yaml lists every key)"]

