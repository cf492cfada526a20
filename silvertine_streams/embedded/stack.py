"""The embedded stack: a Tansu broker and a redis-server on loopback, in a data dir.

``make demo`` and ``make test`` need a real Kafka-protocol broker and a real
Redis without anything installed system-wide. Which binaries and command lines
those are lives in :mod:`.servers`, how a start is known to have worked in
:mod:`.probes`, and the process plumbing (spawn, state files, stop by PID) in
:mod:`.processes`; this module ties them into the stack of one data dir.

Layout of ``<data_dir>``::

    run/kafka.json  run/redis.json   state files (pid, port, url, start time)
    run/.lock                          serialises up/down of this data dir
    logs/kafka.log  logs/redis.log    server output
    redis/                             Redis AOF (the canonical log must survive restarts)

Tansu runs with memory storage: it keeps every message it was sent, so a long
demo grows the broker's memory (~1 GB seen) and a broker restart loses all
topics and offsets. It cannot be bounded: Tansu 0.6.0's memory storage ignores
``retention.ms``/``retention.bytes``, closes the connection on ``DeleteRecords``
and has no file storage (README, *Memory: retention and bounds*).
"""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from silvertine_streams.embedded import processes
from silvertine_streams.embedded.probes import kafka_probe, readiness_probe, redis_probe
from silvertine_streams.embedded.processes import LOOPBACK, ServerState
from silvertine_streams.embedded.servers import (
    INSTALL_HINT,
    KAFKA,
    REDIS,
    SERVER_NAMES,
    check_server_name,
    redis_server_binary,
    server_command,
    tansu_binary,
)
from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.security import redact_url
from silvertine_streams.settings import ENV_PREFIX, Settings

__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "INSTALL_HINT",
    "KAFKA",
    "REDIS",
    "SERVER_NAMES",
    "EmbeddedStack",
    "ServerStatus",
    "kafka_probe",
    "redis_probe",
    "redis_server_binary",
    "resolve_settings_with_stack",
    "tansu_binary",
]

DEFAULT_READY_TIMEOUT_S: Final = 20.0
DEFAULT_STOP_TIMEOUT_S: Final = 10.0

# A port auto-picked as free can be taken before the server binds it (other
# test sessions pick ports too); retry with a new one that many times.
_AUTO_PORT_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class ServerStatus:
    """One embedded server as ``status()`` sees it.

    Attributes:
        name: ``"kafka"`` or ``"redis"``.
        pid: its process id, ``None`` when not running.
        port: its loopback port, ``None`` when not running.
        url: the URL clients use, ``None`` when not running.
        alive: whether the recorded process is running (and is still ours).
    """

    name: str
    pid: int | None
    port: int | None
    url: str | None
    alive: bool


class EmbeddedStack:
    """Start, find, stop and restart the embedded Tansu and redis-server of a data dir.

    A server whose URL is already set in the settings is external: it is never
    started or stopped here. State lives in files under ``<data_dir>/run``, so
    another process (``silvertine stack down``) can stop what this one started.

    Process-level calls block; from async code, run them with
    ``await asyncio.to_thread(stack.start_server, "kafka")``.

    Args:
        settings: uses ``kafka_url``, ``redis_url``, ``data_dir``, ``kafka_port``, ``redis_port``.
        die_with_parent: make the kernel SIGKILL the servers when this process
            dies (Linux ``PR_SET_PDEATHSIG``); for tests, off for ``stack up``.
        ready_timeout_s: how long a server may take to answer after spawning.
        stop_timeout_s: how long a server may take to exit before SIGKILL.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        die_with_parent: bool = False,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.die_with_parent = die_with_parent
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        #: Seconds from spawn to ready, per server started by this object (last start).
        self.startup_seconds: dict[str, float] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # ours, to reap
        self._last_port: dict[str, int] = {}  # so a restart comes back on the same port
        # PR_SET_PDEATHSIG fires when the spawning *thread* exits, so every spawn
        # goes through one long-lived thread rather than whichever thread calls us
        # (asyncio.to_thread workers come and go).
        self._spawner: ThreadPoolExecutor | None = None

    # --- paths -------------------------------------------------------------

    def state_path(self, name: str) -> Path:
        """Return the state file of server ``name``."""
        return self.data_dir / "run" / f"{check_server_name(name)}.json"

    def log_path(self, name: str) -> Path:
        """Return the log file of server ``name``."""
        return self.data_dir / "logs" / f"{check_server_name(name)}.log"

    @property
    def managed(self) -> tuple[str, ...]:
        """Names of the servers this stack runs (those without a URL in the settings)."""
        return tuple(name for name in SERVER_NAMES if self._external_url(name) is None)

    # --- the stack ---------------------------------------------------------

    def up(self) -> Settings:
        """Make sure every managed server runs; return settings with both URLs filled in.

        Idempotent: servers already running from this data dir are reused.

        Raises:
            EmbeddedServerError: a server could not start; servers started by
                this call are stopped again.
        """
        urls: dict[str, str] = {}
        started: list[str] = []
        with processes.locked(self._lock_path()):
            try:
                for name in SERVER_NAMES:
                    external = self._external_url(name)
                    if external is not None:
                        urls[name] = external
                        continue
                    state = self._live_state(name)
                    if state is None:
                        state = self._start(name)
                        started.append(name)
                    else:
                        self._check_adopted(state)
                    urls[name] = state.url
            except BaseException:
                for name in reversed(started):
                    self._stop(name, signal.SIGTERM, self.stop_timeout_s)
                raise
        return self.settings.model_copy(update={"kafka_url": urls[KAFKA], "redis_url": urls[REDIS]})

    def down(self) -> None:
        """Stop every server of this data dir by PID (SIGTERM, then SIGKILL) and remove state.

        Safe when nothing runs, and never signals a process whose PID was recycled.

        Raises:
            EmbeddedServerError: a server survived SIGKILL.
        """
        with processes.locked(self._lock_path()):
            failures: list[EmbeddedServerError] = []
            for name in reversed(SERVER_NAMES):
                try:
                    self._stop(name, signal.SIGTERM, self.stop_timeout_s)
                except EmbeddedServerError as exc:
                    failures.append(exc)
            if self._spawner is not None:
                self._spawner.shutdown(wait=True)
                self._spawner = None
            self._last_port.clear()  # a later up() may pick fresh ports
            if failures:
                raise failures[0]

    def status(self) -> list[ServerStatus]:
        """Report each embedded server of this data dir; stale state files are removed."""
        result: list[ServerStatus] = []
        for name in SERVER_NAMES:
            state = self._live_state(name)
            if state is None:
                result.append(ServerStatus(name, None, None, None, alive=False))
            else:
                result.append(ServerStatus(name, state.pid, state.port, state.url, alive=True))
        return result

    # --- one server (fault tests) --------------------------------------------

    def start_server(self, name: str) -> ServerStatus:
        """Start server ``name`` if it is not running, on the port it had before.

        Redis reloads its AOF from the same data dir, so data written before a
        stop is back. Tansu (memory storage) comes back empty.

        Raises:
            EmbeddedServerError: the server is external, or it could not start.
        """
        self._require_managed(name)
        with processes.locked(self._lock_path()):
            state = self._live_state(name)
            if state is None:
                state = self._start(name)
        return ServerStatus(name, state.pid, state.port, state.url, alive=True)

    def stop_server(
        self, name: str, sig: int = signal.SIGTERM, *, timeout_s: float | None = None
    ) -> int | None:
        """Stop server ``name`` with ``sig`` and wait until its process is gone.

        A signal other than SIGKILL is followed by SIGKILL after ``timeout_s``.
        ``start_server`` brings it back on the same port.

        Returns:
            The PID that was stopped, or ``None`` if it was not running.

        Raises:
            EmbeddedServerError: the server is external, or survived SIGKILL.
        """
        self._require_managed(name)
        with processes.locked(self._lock_path()):
            return self._stop(name, sig, self.stop_timeout_s if timeout_s is None else timeout_s)

    def restart_server(self, name: str, sig: int = signal.SIGTERM) -> ServerStatus:
        """Stop server ``name`` with ``sig`` and start it again on the same port."""
        self.stop_server(name, sig)
        return self.start_server(name)

    def signal_server(self, name: str, sig: int) -> int:
        """Send ``sig`` (e.g. SIGSTOP / SIGCONT to stall a server) without waiting.

        Returns:
            The PID signalled.

        Raises:
            EmbeddedServerError: the server is external or not running.
        """
        self._require_managed(name)
        state = self._live_state(name)
        if state is None or not processes.signal_process(state, sig):
            raise EmbeddedServerError(name, "not running")
        return state.pid

    # --- internals -----------------------------------------------------------

    def _lock_path(self) -> Path:
        return self.data_dir / "run" / ".lock"

    def _external_url(self, name: str) -> str | None:
        url = self.settings.kafka_url if name == KAFKA else self.settings.redis_url
        return url

    def _require_managed(self, name: str) -> None:
        url = self._external_url(check_server_name(name))
        if url is not None:
            raise EmbeddedServerError(
                name, f"external server {redact_url(url)} (set in {ENV_PREFIX}{name.upper()}_URL); "
                "not ours"
            )

    def _live_state(self, name: str) -> ServerState | None:
        """Read ``name``'s state file; remove it and return ``None`` if it is stale."""
        path = self.state_path(name)
        try:
            state = processes.read_state(path)
        except ValueError:
            path.unlink(missing_ok=True)  # corrupt: nothing can be trusted in it
            return None
        if state is None:
            return None
        if not processes.is_alive(state):
            path.unlink(missing_ok=True)
            self._reap(name)
            return None
        return state

    def _check_adopted(self, state: ServerState) -> None:
        """Make sure a server found running from an earlier ``up`` still answers."""
        processes.wait_ready(
            state.name,
            state.pid,
            readiness_probe(state.name, state.url, self.settings),
            self.log_path(state.name),
            exited=processes.state_exited(state),
            timeout_s=self.ready_timeout_s,
        )

    def _pick_port(self, name: str) -> tuple[int, bool]:
        """Return ``(port, auto)``; ``auto`` means we chose it and may choose again."""
        if name in self._last_port:
            return self._last_port[name], False
        fixed = self.settings.kafka_port if name == KAFKA else self.settings.redis_port
        if fixed:
            return fixed, False
        return processes.pick_free_port(), True

    def _start(self, name: str) -> ServerState:
        binary = tansu_binary() if name == KAFKA else redis_server_binary()
        port, auto = self._pick_port(name)
        attempts = _AUTO_PORT_ATTEMPTS if auto else 1
        for attempt in range(1, attempts + 1):
            if not processes.port_is_free(port):
                if attempt < attempts:
                    port = processes.pick_free_port()
                    continue
                setting = f"{ENV_PREFIX}{name.upper()}_PORT"
                raise EmbeddedServerError(
                    name,
                    f"port {port} on {LOOPBACK} is taken by another process; stop it, "
                    f"or set {setting} to another port (0 picks a free one)",
                )
            try:
                return self._spawn_and_wait(name, binary, port)
            except EmbeddedServerError:
                # Lost a race for an auto-picked port: someone bound it between our
                # check and the server's bind. Anything else is a real failure.
                if attempt == attempts or processes.port_is_free(port):
                    raise
                port = processes.pick_free_port()
        raise AssertionError("unreachable")  # the loop returns or raises

    def _spawn_and_wait(self, name: str, binary: str, port: int) -> ServerState:
        for sub in ("run", "logs", "redis"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(name)
        argv, url, env = server_command(name, binary, port, self.data_dir, log_path)
        with log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"--- {stamp} silvertine starts: {' '.join(argv)}\n".encode())
        spawned_at = time.monotonic()
        if self.die_with_parent:
            if self._spawner is None:
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="silvertine-spawner")
            proc = self._spawner.submit(
                processes.spawn,
                name,
                argv,
                log_path,
                cwd=self.data_dir,
                env=env,
                die_with_parent=True,
            ).result()
        else:
            proc = processes.spawn(name, argv, log_path, cwd=self.data_dir, env=env)
        self._children[name] = proc
        ticks = processes.proc_start_ticks(proc.pid)
        if ticks is None:  # exited already: let wait_ready report its exit code and log
            ticks = -1
        state = ServerState(
            name=name,
            pid=proc.pid,
            port=port,
            url=url,
            started_at=time.time(),
            proc_start_ticks=ticks,
            argv=tuple(argv),
            log_path=str(log_path),
        )
        # Written before the wait, so a crash of ours mid-wait still leaves `down` a way in.
        processes.write_state(self.state_path(name), state)
        try:
            processes.wait_ready(
                name,
                proc.pid,
                readiness_probe(name, url, self.settings),
                log_path,
                exited=processes.child_exited(proc),
                timeout_s=self.ready_timeout_s,
            )
        except BaseException:
            self._stop(name, signal.SIGTERM, self.stop_timeout_s)
            raise
        self.startup_seconds[name] = time.monotonic() - spawned_at
        self._last_port[name] = port
        return state

    def _stop(self, name: str, sig: int, timeout_s: float) -> int | None:
        path = self.state_path(name)
        try:
            state = processes.read_state(path)
        except ValueError:
            state = None
        pid: int | None = None
        if state is not None:
            self._last_port[name] = state.port
            if processes.is_alive(state):
                pid = state.pid
            processes.stop_process(state, sig=sig, timeout_s=timeout_s)
        path.unlink(missing_ok=True)
        child = self._children.pop(name, None)
        if child is not None and child.poll() is None:
            if state is None or child.pid != state.pid:
                # Ours, but its state file is gone or names another process: stop it anyway.
                pid = child.pid
                child.send_signal(sig)
            try:
                # waitpid returns only once every thread has exited: the port is free then.
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5.0)
        return pid

    def _reap(self, name: str) -> None:
        """Collect the exit status of our child, so it leaves no zombie behind."""
        child = self._children.get(name)
        if child is None:
            return
        if child.poll() is None:
            return  # still running (e.g. stale check raced a restart); keep it
        del self._children[name]


def resolve_settings_with_stack(settings: Settings, *, die_with_parent: bool = False) -> Settings:
    """Return settings with both server URLs set, starting the embedded stack if needed.

    With both ``kafka_url`` and ``redis_url`` set nothing is started. Otherwise
    the missing servers are started (or found running) in ``settings.data_dir``
    and keep running after this returns; ``EmbeddedStack(settings).down()``
    (``silvertine stack down``) stops them.

    Raises:
        EmbeddedServerError: a server could not start.
    """
    if settings.kafka_url is not None and settings.redis_url is not None:
        return settings
    return EmbeddedStack(settings, die_with_parent=die_with_parent).up()
