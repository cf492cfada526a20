"""A worker with default settings listens on loopback only (web server, metrics, anything else)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from silvertine_streams.embedded.processes import die_with_parent_preexec
from silvertine_streams.settings import Settings, settings_env
from tests.helpers import wait_for
from tests.sockets import Listener, listeners_of, parse_proc_net
from tests.workers import free_port

pytestmark = pytest.mark.integration

# /proc/net/tcp and tcp6 lines: loopback, any address, a LAN address, and a connection.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101
   1: 00000000:17C2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102
   2: 0A01A8C0:24EA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 103
   3: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 104
"""
PROC_NET_TCP6 = "\n".join([
    "  sl  local_address                         remote_address                        st",
    "   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A"
    " 00000000:00000000 00:00000000 00000000     0        0 201",
    "   1: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A"
    " 00000000:00000000 00:00000000 00000000     0        0 202",
])


def test_the_socket_reader_tells_loopback_from_the_rest() -> None:
    tcp = parse_proc_net(PROC_NET_TCP, "tcp")
    assert [(s.address, s.port, s.loopback) for s in tcp] == [
        ("127.0.0.1", 8080, True), ("0.0.0.0", 6082, False), ("192.168.1.10", 9450, False)]
    tcp6 = parse_proc_net(PROC_NET_TCP6, "tcp6")
    assert [(s.address, s.port, s.loopback) for s in tcp6] == [
        ("::1", 8081, True), ("::", 8082, False)]


def test_a_worker_with_default_settings_listens_on_loopback_only(
        pipeline_settings: Settings, tmp_path: Path) -> None:
    web_port, metrics_port = free_port(), free_port()
    env = settings_env(pipeline_settings, os.environ)
    # The defaults under test: no bind address is given.
    for variable in ("SILVERTINE_WEB_HOST", "SILVERTINE_METRICS_HOST"):
        env.pop(variable, None)
    env.update(SILVERTINE_WEB_PORT=str(web_port), SILVERTINE_METRICS_PORT=str(metrics_port))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "silvertine_streams", "worker"], env=env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent_preexec(os.getpid()))
    try:
        def serving() -> list[Listener]:
            assert worker.poll() is None, log_path.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2):
                pass
            found = listeners_of(worker.pid)
            ports = {listener.port for listener in found}
            return found if {web_port, metrics_port} <= ports else []

        listeners = wait_for(serving, timeout=90, interval=0.2, ignore=(OSError,),
                             message="the worker's web server and metrics to listen")
        outside = [listener for listener in listeners if not listener.loopback]
        assert not outside, f"listening beyond loopback: {outside}"
        # The Faust web server answers on loopback: the check above saw the real socket.
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=5) as response:
            assert response.status == 200
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
