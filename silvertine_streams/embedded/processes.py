"""Run a server as a child process and find it again later by its PID file.

This layer knows nothing about Kafka or Redis: it spawns a command with its
output in a log file, records it in a JSON state file, waits for a readiness
probe with a deadline, and stops it by PID. A PID alone is not an identity
(the kernel recycles them), so every state file also keeps the process's start
time from ``/proc/<pid>/stat``; a PID whose start time differs is someone
else's process and is never signalled.

Linux only: liveness and identity come from ``/proc``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from silvertine_streams.errors import EmbeddedServerError

PROC_ROOT = Path("/proc")
LOOPBACK = "127.0.0.1"
LOG_TAIL_LINES = 20

# prctl(2) option number from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ServerState:
    """What a state file records about one running server.

    Attributes:
        name: the server's name, e.g. ``"kafka"``.
        pid: its process id.
        port: the loopback port it listens on.
        url: the URL clients use to reach it.
        started_at: wall-clock start, seconds since the epoch.
        proc_start_ticks: field 22 of ``/proc/<pid>/stat`` (start time in clock
            ticks since boot); tells our process from a later one with a recycled PID.
        argv: the command line it was started with.
        log_path: where its output goes.
    """

    name: str
    pid: int
    port: int
    url: str
    started_at: float
    proc_start_ticks: int
    argv: tuple[str, ...] = ()
    log_path: str = ""

    def to_json(self) -> str:
        """Serialise to the state file's JSON text."""
        data = asdict(self)
        data["argv"] = list(self.argv)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServerState:
        """Parse a state file's JSON text.

        Raises:
            ValueError: the text is not a state file (bad JSON, missing or mistyped fields).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        try:
            state = cls(
                name=_typed(data, "name", str),
                pid=_typed(data, "pid", int),
                port=_typed(data, "port", int),
                url=_typed(data, "url", str),
                started_at=float(_typed(data, "started_at", (int, float))),
                proc_start_ticks=_typed(data, "proc_start_ticks", int),
                argv=tuple(str(arg) for arg in data.get("argv", ())),
                log_path=str(data.get("log_path", "")),
            )
        except KeyError as exc:
            raise ValueError(f"missing field {exc.args[0]!r}") from exc
        if state.pid <= 0 or not 0 < state.port <= 65535:
            raise ValueError(f"pid {state.pid} or port {state.port} out of range")
        return state


def _typed(data: Mapping[str, object], key: str, kind: type | tuple[type, ...]) -> Any:
    """Return ``data[key]`` if it is of ``kind``."""
    value = data[key]
    # bool is an int subclass; a state file saying "pid": true is corrupt, not PID 1.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"field {key!r} has the wrong type: {value!r}")
    return value


def read_state(path: Path) -> ServerState | None:
    """Read a state file; ``None`` when it does not exist.

    Raises:
        ValueError: the file exists but is not a valid state file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return ServerState.from_json(text)


def write_state(path: Path, state: ServerState) -> None:
    """Write a state file atomically, so a reader never sees half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(state.to_json(), encoding="utf-8")
    os.replace(tmp, path)


def proc_start_ticks(pid: int, proc_root: Path = PROC_ROOT) -> int | None:
    """Return the start time of a live process, or ``None`` if it is gone.

    A zombie whose threads have all exited counts as gone: it only waits for
    its parent to reap it, and its sockets are closed.
    """
    try:
        raw = (proc_root / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    return parse_stat_start_ticks(raw)


def parse_stat_start_ticks(raw: str) -> int | None:
    """Extract the start time from ``/proc/<pid>/stat`` text; ``None`` once it is dead.

    The command name (field 2) is in parentheses and may itself contain spaces
    and parentheses, so fields are counted from the *last* closing parenthesis.
    A multi-threaded process killed by a signal shows its main thread as a
    zombie while the other threads still exit and still hold its file
    descriptors (a listening port among them): it is dead only when the thread
    count has dropped to one.

    Raises:
        ValueError: the text does not look like a stat line.
    """
    _, sep, rest = raw.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 20:
        raise ValueError(f"unexpected /proc stat line: {raw[:80]!r}")
    state = fields[0]  # field 3
    num_threads = int(fields[17])  # field 20
    if state in ("X", "x") or (state == "Z" and num_threads <= 1):
        return None
    return int(fields[19])  # field 22: starttime


def is_alive(state: ServerState, proc_root: Path = PROC_ROOT) -> bool:
    """Tell whether the process a state file describes is still the one running."""
    return proc_start_ticks(state.pid, proc_root) == state.proc_start_ticks


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Tell whether a server could listen on ``host:port`` now.

    SO_REUSEADDR matches what redis-server and Tansu set, so a port held only by
    connections in TIME_WAIT counts as free (they could bind it), while a port
    with a listener on it does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(host: str = LOOPBACK) -> int:
    """Return a port the kernel considers free on ``host``.

    Another process could take it before our server binds it; the readiness
    wait then reports the server's exit and its log names the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or ``""`` if there is none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            # 16 KiB holds 20 lines of any sane server log; avoid reading a huge file.
            handle.seek(max(0, size - 16_384))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def die_with_parent_preexec(parent_pid: int) -> Callable[[], None]:
    """Build a ``preexec_fn`` that makes the child get SIGKILL when its parent dies."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(127)
        # The parent may have died between fork and prctl; then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_path``.

    Its own session keeps a Ctrl-C in the caller's terminal from reaching the
    server: servers outlive the command that started them and are stopped by
    PID. With ``die_with_parent`` the kernel SIGKILLs the server when the
    spawning *thread* exits (Linux ``PR_SET_PDEATHSIG``), so a SIGKILLed test
    run leaves nothing behind; spawn from a thread that lives as long as the
    server should.

    Raises:
        EmbeddedServerError: the binary cannot be executed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec = die_with_parent_preexec(os.getpid()) if die_with_parent else None
    with log_path.open("ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=preexec,
                close_fds=True,
            )
        except OSError as exc:
            raise EmbeddedServerError(
                name, f"cannot execute {argv[0]}: {exc.strerror or exc}", log_tail(log_path)
            ) from exc


def wait_ready(
    name: str,
    pid: int,
    probe: Callable[[], None],
    log_path: Path,
    *,
    exited: Callable[[], str | None],
    timeout_s: float,
    interval_s: float = 0.05,
) -> float:
    """Poll ``probe`` until it returns without raising; return the seconds it took.

    Args:
        name: the server's name, for errors.
        pid: the server's process id, for errors.
        probe: raises while the server is not ready; returns once it is. An
            :class:`EmbeddedServerError` from it is fatal and ends the wait.
        log_path: the server's log, quoted in errors.
        exited: returns why the process is no longer running (e.g. ``"exited
            with code 1"``), or ``None`` while it runs; a dead process ends the wait.
        timeout_s: how long to wait in all.
        interval_s: pause between probes.

    Raises:
        EmbeddedServerError: the process ended, or the deadline passed; with the
            last probe failure and the tail of the server's log.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    last_failure = "never probed"
    while True:
        gone = exited()
        if gone is not None:
            raise EmbeddedServerError(
                name, f"process {pid} {gone} before it was ready", log_tail(log_path)
            )
        try:
            probe()
        except EmbeddedServerError:
            raise  # the probe found something waiting will not fix
        # A probe fails in many library-specific ways while a server boots; each
        # one only means "not yet", and the last one is reported on timeout.
        except Exception as exc:  # noqa: BLE001
            last_failure = f"{type(exc).__name__}: {exc}"
        else:
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            raise EmbeddedServerError(
                name,
                f"not ready after {timeout_s:g}s (process {pid} still running); "
                f"last probe: {last_failure}",
                log_tail(log_path),
            )
        time.sleep(interval_s)


def child_exited(proc: subprocess.Popen[bytes]) -> Callable[[], str | None]:
    """Build an ``exited`` callable for :func:`wait_ready` from a child we spawned."""

    def exited() -> str | None:
        code = proc.poll()
        if code is None:
            return None
        if code < 0:
            return f"was killed by signal {signal.Signals(-code).name}"
        return f"exited with code {code}"

    return exited


def state_exited(state: ServerState, proc_root: Path = PROC_ROOT) -> Callable[[], str | None]:
    """Build an ``exited`` callable for :func:`wait_ready` from a state file's process."""

    def exited() -> str | None:
        return None if is_alive(state, proc_root) else "is gone"

    return exited


def wait_gone(pid: int, start_ticks: int, timeout_s: float, proc_root: Path = PROC_ROOT) -> bool:
    """Poll until the process ``pid`` with ``start_ticks`` is gone; ``False`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while proc_start_ticks(pid, proc_root) == start_ticks:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def signal_process(state: ServerState, sig: int, proc_root: Path = PROC_ROOT) -> bool:
    """Send ``sig`` to the process a state file names, if it is still that process.

    Returns:
        ``True`` if the signal was sent, ``False`` if the process is gone or its
        PID now belongs to another process.
    """
    if not is_alive(state, proc_root):
        return False
    try:
        os.kill(state.pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_process(
    state: ServerState,
    *,
    sig: int = signal.SIGTERM,
    timeout_s: float = 10.0,
    proc_root: Path = PROC_ROOT,
) -> None:
    """Stop a server by PID: send ``sig``, wait up to ``timeout_s``, then SIGKILL.

    Safe to call on a process that is already gone or whose PID was recycled:
    nothing is signalled then.

    Raises:
        EmbeddedServerError: the process survived SIGKILL (e.g. stuck in the kernel).
    """
    if not signal_process(state, sig, proc_root):
        return
    if wait_gone(state.pid, state.proc_start_ticks, timeout_s, proc_root):
        return
    if sig != signal.SIGKILL:
        signal_process(state, signal.SIGKILL, proc_root)
        if wait_gone(state.pid, state.proc_start_ticks, 5.0, proc_root):
            return
    raise EmbeddedServerError(
        state.name,
        f"process {state.pid} is still running after signal {signal.Signals(sig).name} and SIGKILL",
        log_tail(Path(state.log_path)) if state.log_path else "",
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` so two ``up``/``down`` calls don't interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
