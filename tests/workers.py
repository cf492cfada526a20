"""Run real ``silvertine worker`` processes from tests, and stop them by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from silvertine_streams.embedded.processes import die_with_parent_preexec
from silvertine_streams.settings import Settings, settings_env


def free_port() -> int:
    """Return a TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    """One ``silvertine worker`` subprocess with its own log file."""

    settings: Settings
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> WorkerProcess:
        """Start the worker (web and metrics ports are fresh for each start)."""
        env = settings_env(self.settings, os.environ)
        env.update(
            SILVERTINE_WEB_PORT=str(free_port()),
            SILVERTINE_METRICS_PORT=str(self.metrics_port),
            **self.extra_env,
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "silvertine_streams", "worker"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # A killed or interrupted test run must not leave workers behind.
            preexec_fn=die_with_parent_preexec(os.getpid()),
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        """The worker's PID."""
        assert self.process is not None, "worker not started"
        return self.process.pid

    def alive(self) -> bool:
        """Whether the worker process is still running."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker: no shutdown, no commit, no flush."""
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.process.poll() is None:
                self.process.kill()
        return self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the worker wrote, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
