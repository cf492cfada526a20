"""Unit tests for silvertine_streams.cli.supervisor: restart a crashed child with
backoff, never one that failed before it started, and stop with it on SIGTERM.

The children are tiny Python scripts. A supervisor that must receive a signal
runs in a process of its own; the others run here, with this process's signal
handlers put back afterwards.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from silvertine_streams.cli.errors import CONFIG_ERROR_EXIT
from silvertine_streams.cli.supervisor import supervise
from tests.helpers import wait_for

# A supervisor that wrongly restarts forever fails here rather than hanging the suite.
pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[3]

# Appends one line to the runs file per start, then exits with the status its run
# number picks from the list (the last one repeats). A status written as "+N" means
# "started (touched the ready file), then exited with N"; a bare N exits before that.
CHILD = """
import os, sys
from pathlib import Path
runs, statuses = Path(sys.argv[1]), sys.argv[2:]
with runs.open("a") as f:
    f.write(os.environ["SILVERTINE_RESTARTS"] + "\\n")
count = len(runs.read_text().splitlines())
status = statuses[min(count, len(statuses)) - 1]
if status.startswith("+"):
    Path(os.environ["SILVERTINE_READY_FILE"]).touch()
sys.exit(int(status))
"""

# Exits with 7 on SIGTERM; signals that it is ready by writing its runs line.
WAITING_CHILD = """
import os, signal, sys
from pathlib import Path
signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
Path(os.environ["SILVERTINE_READY_FILE"]).touch()
with Path(sys.argv[1]).open("a") as f:
    f.write("run\\n")
while True:
    signal.pause()
"""

SUPERVISOR = """
import sys
from silvertine_streams.cli.supervisor import supervise
argv, timeout = sys.argv[1:], 30.0
if argv[0] == "--stop-timeout":
    timeout, argv = float(argv[1]), argv[2:]
sys.exit(supervise(argv, stop_timeout_s=timeout))
"""


def child(script: str, runs: Path, *statuses: int | str) -> list[str]:
    return [sys.executable, "-c", script, str(runs), *map(str, statuses)]


def runs_of(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    """supervise() installs SIGTERM/SIGINT handlers: give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def supervisors() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Supervisor processes a test started; killed by PID if the test left one running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def start_supervisor(argv: list[str], started: list[subprocess.Popen[bytes]]
                     ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    process = subprocess.Popen([sys.executable, "-c", SUPERVISOR, *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started.append(process)
    return process


def test_a_configuration_error_is_not_retried(tmp_path: Path, own_signal_handlers: None,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert supervise(child(CHILD, runs, CONFIG_ERROR_EXIT)) == CONFIG_ERROR_EXIT
    assert runs_of(runs) == 1
    assert "restarting" not in capfd.readouterr().err


def test_a_crashed_child_is_restarted_with_a_growing_backoff(
    tmp_path: Path, own_signal_handlers: None, capfd: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    # Starts and crashes twice, then fails at start-up (which ends the supervisor).
    assert supervise(child(CHILD, runs, "+3", "+1", 3)) == 3
    assert runs.read_text().splitlines() == ["0", "1", "2"]  # the restart count it was given
    assert capfd.readouterr().err.splitlines() == [
        "silvertine: worker exited with status 3; restarting in 1s",
        "silvertine: worker exited with status 1; restarting in 2s",
    ]


@pytest.mark.parametrize("status", [1, 3, 4, 5, 6, 70])
def test_a_child_that_fails_before_it_started_is_never_restarted(
    status: int, tmp_path: Path, own_signal_handlers: None, capfd: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    assert supervise(child(CHILD, runs, status)) == status
    assert runs_of(runs) == 1
    err = capfd.readouterr().err
    assert "restarting" not in err
    # Start-up failures of ours print their own line; anything else gets one from us.
    assert ("failed at start-up" in err) == (status in (1, 70))


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(
    tmp_path: Path, supervisors: list[subprocess.Popen[bytes]]
) -> None:
    runs = tmp_path / "runs"
    stubborn = WAITING_CHILD.replace("sys.exit(7)", "None")
    argv = child(stubborn, runs)
    process = start_supervisor(["--stop-timeout", "1", *argv], supervisors)
    wait_for(lambda: runs_of(runs) == 1, message="the child started")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 128 + signal.SIGKILL
    assert process.stderr is not None and b"did not stop within 1s" in process.stderr.read()


def test_the_environment_is_passed_to_the_child(tmp_path: Path,
                                                own_signal_handlers: None) -> None:
    runs = tmp_path / "runs"
    script = ("import os, sys; open(sys.argv[1], 'w').write(os.environ['SILVERTINE_X']); "
              "sys.exit(2)")
    env = {"SILVERTINE_X": "from-supervisor", "PATH": os.environ.get("PATH", "")}
    assert supervise([sys.executable, "-c", script, str(runs)], env) == 2
    assert runs.read_text() == "from-supervisor"


def test_sigterm_stops_the_child_and_then_the_supervisor(
    tmp_path: Path, supervisors: list[subprocess.Popen[bytes]]
) -> None:
    runs = tmp_path / "runs"
    process = start_supervisor(child(WAITING_CHILD, runs), supervisors)
    wait_for(lambda: runs_of(runs) == 1, message="the child started")
    process.send_signal(signal.SIGTERM)
    # The child's own status, passed on; and no restart after a requested stop.
    assert process.wait(timeout=10) == 7
    assert runs_of(runs) == 1
    assert process.stderr is not None and b"restarting" not in process.stderr.read()


def test_sigterm_during_the_backoff_ends_it_without_a_restart(
    tmp_path: Path, supervisors: list[subprocess.Popen[bytes]]
) -> None:
    runs = tmp_path / "runs"
    process = start_supervisor(child(CHILD, runs, "+3"), supervisors)
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], 10.0)
    assert ready, "the supervisor did not report the crash"
    first_line = process.stderr.readline()
    assert first_line == b"silvertine: worker exited with status 3; restarting in 1s\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 3
    assert runs_of(runs) == 1
