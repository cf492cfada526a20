"""Run a real NTP server (Debian's ``chronyd``) on a loopback UDP port for tests.

chronyd serves its own clock (``local stratum 8``), never touches the system
clock (``-x``), keeps its files in a directory of ours, and is stopped by PID.
It is started with ``die_with_parent``, so a killed test run leaves none behind.

A test must not install software: when ``chronyd`` is missing this fails with
the command that installs it (:data:`INSTALL_HINT`) rather than skipping, so a
machine without it never reports the clock tests as passed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ntplib

from silvertine_streams.embedded.processes import (
    LOOPBACK,
    child_exited,
    spawn,
    wait_ready,
)
from silvertine_streams.errors import EmbeddedServerError

INSTALL_HINT = "apt-get update && apt-get install -y chrony"
# Debian installs chronyd in /usr/sbin, which is not on a normal user's PATH.
_CHRONYD_PATHS = ("/usr/sbin/chronyd", "/sbin/chronyd")
_SERVER = "chrony"


@dataclass
class NtpServer:
    """A running chronyd.

    Attributes:
        port: the loopback UDP port it serves NTP on.
        process: the chronyd child process.
        workdir: its config, pid file, drift file and log.
    """

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    host: str = LOOPBACK

    @property
    def address(self) -> str:
        """``host:port``, as :class:`~silvertine_streams.observability.clock.ClockSync` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        """chronyd's output."""
        return self.workdir / "chronyd.log"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop chronyd by PID: SIGTERM, then SIGKILL after ``timeout_s``; idempotent."""
        if self.process.poll() is not None:
            return
        # Popen signals only its own, not yet reaped, child: the PID cannot be recycled.
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)


def find_chronyd() -> str:
    """Return the path of ``chronyd``.

    Raises:
        EmbeddedServerError: chronyd is not installed; the message says how to install it.
    """
    found = shutil.which("chronyd")
    if found is None:
        found = next((path for path in _CHRONYD_PATHS if os.access(path, os.X_OK)), None)
    if found is None:
        raise EmbeddedServerError(
            _SERVER,
            f"chronyd is not installed, so the NTP clock tests cannot run. Install it with: "
            f"{INSTALL_HINT}",
        )
    return found


def pick_free_udp_port(host: str = LOOPBACK) -> int:
    """Return a UDP port nothing listens on now (it may be taken before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_chronyd(workdir: Path, *, port: int = 0, timeout_s: float = 10.0) -> NtpServer:
    """Start chronyd on ``127.0.0.1:port`` (0 = a free port) and wait until it answers NTP.

    Raises:
        EmbeddedServerError: chronyd is missing, exited, or did not answer in ``timeout_s``.
    """
    chronyd = find_chronyd()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or pick_free_udp_port()
    conf = workdir / "chrony.conf"
    conf.write_text(
        "\n".join(
            [
                f"port {port}",
                f"bindaddress {LOOPBACK}",
                f"allow {LOOPBACK}",
                "local stratum 8",  # serve our own clock: no upstream servers
                "cmdport 0",  # no chronyc UDP port
                "bindcmdaddress /",  # and no chronyc Unix socket in /run/chrony
                f"pidfile {workdir / 'chronyd.pid'}",
                f"driftfile {workdir / 'drift'}",
                "",
            ]
        )
    )
    # -d: foreground, log to stderr; -x: never adjust the system clock; -4: IPv4 only.
    argv = [chronyd, "-d", "-x", "-4", "-f", str(conf)]
    # As root, keep root (dropping to _chrony would lose access to our files);
    # otherwise skip chronyd's root check: -x needs no privileges on a high port.
    argv += ["-u", "root"] if os.geteuid() == 0 else ["-U"]
    log_path = workdir / "chronyd.log"
    process = spawn(_SERVER, argv, log_path, die_with_parent=True)
    server = NtpServer(port=port, process=process, workdir=workdir)
    client = ntplib.NTPClient()

    def probe() -> None:
        client.request(LOOPBACK, port=port, version=3, timeout=0.2)

    try:
        wait_ready(
            _SERVER,
            process.pid,
            probe,
            log_path,
            exited=child_exited(process),
            timeout_s=timeout_s,
        )
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def running_chronyd(workdir: Path, *, port: int = 0) -> Iterator[NtpServer]:
    """Run chronyd for the ``with`` block; stop it by PID afterwards, whatever happens."""
    server = start_chronyd(workdir, port=port)
    try:
        yield server
    finally:
        server.stop()
