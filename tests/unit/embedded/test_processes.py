"""Pure parts of the process layer: state files, /proc parsing, stale detection, ports."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from silvertine_streams.embedded import processes
from silvertine_streams.embedded.processes import ServerState
from silvertine_streams.errors import EmbeddedServerError


def _state(**changes: object) -> ServerState:
    fields: dict[str, object] = {
        "name": "redis",
        "pid": 4242,
        "port": 6390,
        "url": "redis://127.0.0.1:6390/0",
        "started_at": 1_700_000_000.5,
        "proc_start_ticks": 123_456,
        "argv": ("redis-server", "--port", "6390"),
        "log_path": "/tmp/x/logs/redis.log",
    }
    fields.update(changes)
    return ServerState(**fields)  # type: ignore[arg-type]  # test data, typed above


def _stat_line(pid: int, comm: str, state: str, threads: int, start_ticks: int) -> str:
    # Fields 3..52 of /proc/<pid>/stat; only state (3), num_threads (20) and starttime (22) matter.
    rest = ["0"] * 50
    rest[0] = state
    rest[17] = str(threads)
    rest[19] = str(start_ticks)
    return f"{pid} ({comm}) {' '.join(rest)}\n"


def _fake_proc(root: Path, pid: int, line: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "stat").write_text(line)


# --- state files ---------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    state = _state()
    assert ServerState.from_json(state.to_json()) == state


def test_state_file_written_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "redis.json"
    processes.write_state(path, _state())
    assert processes.read_state(path) == _state()
    assert sorted(p.name for p in path.parent.iterdir()) == ["redis.json"]  # no temp file left


def test_missing_state_file_reads_as_none(tmp_path: Path) -> None:
    assert processes.read_state(tmp_path / "kafka.json") is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"name": "redis"}', "missing field"),
        (_state().to_json().replace('"pid": 4242', '"pid": "4242"'), "wrong type"),
        (_state().to_json().replace('"pid": 4242', '"pid": true'), "wrong type"),
        (_state().to_json().replace('"pid": 4242', '"pid": -1'), "out of range"),
        (_state().to_json().replace('"port": 6390', '"port": 70000'), "out of range"),
    ],
)
def test_corrupt_state_file_is_rejected(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        ServerState.from_json(text)


# --- /proc parsing and stale detection -----------------------------------------------


def test_start_ticks_parsed_after_the_last_parenthesis() -> None:
    # A command name may contain spaces and ")": counting from the first ")" would be wrong.
    line = _stat_line(77, "evil) S 1 (name", "S", 3, 987_654)
    assert processes.parse_stat_start_ticks(line) == 987_654


def test_zombie_with_one_thread_is_dead() -> None:
    assert processes.parse_stat_start_ticks(_stat_line(77, "tansu", "Z", 1, 5)) is None


def test_zombie_leader_with_threads_still_exiting_is_not_dead() -> None:
    # After SIGKILL the main thread is a zombie while others still hold the listening socket.
    assert processes.parse_stat_start_ticks(_stat_line(77, "tansu", "Z", 4, 5)) == 5


def test_garbage_stat_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        processes.parse_stat_start_ticks("77 tansu S 1")


def test_state_of_a_running_process_with_the_same_start_time_is_alive(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 4242, _stat_line(4242, "redis-server", "S", 5, 123_456))
    assert processes.is_alive(_state(), proc_root=tmp_path)


def test_recycled_pid_is_detected_by_its_start_time(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 4242, _stat_line(4242, "bash", "S", 1, 999_999))
    assert not processes.is_alive(_state(), proc_root=tmp_path)


def test_vanished_process_is_not_alive(tmp_path: Path) -> None:
    assert processes.proc_start_ticks(4242, proc_root=tmp_path) is None
    assert not processes.is_alive(_state(), proc_root=tmp_path)


def test_real_proc_entry_of_this_process_is_alive() -> None:
    ticks = processes.proc_start_ticks(os.getpid())
    assert isinstance(ticks, int)
    assert processes.is_alive(_state(pid=os.getpid(), proc_start_ticks=ticks))


def test_stop_never_signals_a_recycled_pid() -> None:
    # Our own PID with another start time stands for "PID reused by someone else":
    # were it signalled, this test process would die of SIGKILL.
    ticks = processes.proc_start_ticks(os.getpid())
    assert ticks is not None
    recycled = _state(pid=os.getpid(), proc_start_ticks=ticks + 1)
    assert not processes.signal_process(recycled, signal.SIGKILL)
    processes.stop_process(recycled, sig=signal.SIGKILL, timeout_s=0.1)


# --- ports ------------------------------------------------------------------------


def test_free_port_is_free_and_a_listening_port_is_not() -> None:
    port = processes.pick_free_port()
    assert 0 < port <= 65535
    assert processes.port_is_free(port)
    with socket.socket() as listener:
        listener.bind((processes.LOOPBACK, port))
        listener.listen()
        assert not processes.port_is_free(port)
    assert processes.port_is_free(port)


# --- logs and readiness -------------------------------------------------------------


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    tail = processes.log_tail(log, lines=20)
    assert tail.splitlines() == [f"line {n}" for n in range(80, 100)]
    assert processes.log_tail(tmp_path / "missing.log") == ""


def test_wait_ready_returns_once_the_probe_passes(tmp_path: Path) -> None:
    calls: list[int] = []

    def probe() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not yet")

    elapsed = processes.wait_ready(
        "kafka", 1, probe, tmp_path / "k.log", exited=lambda: None, timeout_s=5, interval_s=0
    )
    assert len(calls) == 3
    assert elapsed >= 0


def test_wait_ready_reports_an_exited_process_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "redis.log"
    log.write_text("# Creating Server TCP listening socket 127.0.0.1:6390: bind: in use\n")
    with pytest.raises(EmbeddedServerError) as info:
        processes.wait_ready(
            "redis", 99, lambda: None, log, exited=lambda: "exited with code 1", timeout_s=5
        )
    assert info.value.server == "redis"
    assert "process 99 exited with code 1" in info.value.reason
    assert "bind: in use" in info.value.log_tail


def test_wait_ready_times_out_with_the_last_probe_failure(tmp_path: Path) -> None:
    def probe() -> None:
        raise ConnectionRefusedError("refused on 6390")

    with pytest.raises(EmbeddedServerError, match="not ready after 0.05s.*refused on 6390"):
        processes.wait_ready(
            "redis", 1, probe, tmp_path / "r.log", exited=lambda: None, timeout_s=0.05
        )


def test_a_fatal_probe_error_ends_the_wait_at_once(tmp_path: Path) -> None:
    def probe() -> None:
        raise EmbeddedServerError("redis", "runs without AOF")

    with pytest.raises(EmbeddedServerError, match="without AOF"):
        processes.wait_ready(
            "redis", 1, probe, tmp_path / "r.log", exited=lambda: None, timeout_s=60
        )
