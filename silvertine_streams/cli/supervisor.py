"""``silvertine worker`` supervises its Faust worker process and restarts it.

The Faust worker runs as a child process. It counts as *started* once it has
touched the file named by ``SILVERTINE_READY_FILE`` (Faust finished starting).
A child that exits before that failed at start-up (a bad setting, a server that
does not answer, refused credentials): it is never restarted, and its status is
the supervisor's. A started child that exits on its own (a crash) is started
again after a backoff that doubles up to ``max_backoff_s``; the new consumer
resumes from the group's committed offsets, which never pass an unprocessed
message. The restart count reaches the child as ``SILVERTINE_RESTARTS`` (it is
the ``silvertine_worker_restarts`` metric).

SIGTERM or SIGINT to the supervisor is passed to the child, which drains and
commits; a child still running ``stop_timeout_s`` later is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from silvertine_streams.cli.errors import STARTUP_FAILURE_EXITS
from silvertine_streams.embedded.processes import die_with_parent_preexec

log = logging.getLogger(__name__)

READY_FILE_VARIABLE = "SILVERTINE_READY_FILE"
RESTARTS_VARIABLE = "SILVERTINE_RESTARTS"

_HEALTHY_RUN_S = 60.0
_POLL_S = 0.05  # how often the supervisor looks at its child and the clock
_KILLED_BY_SIGKILL = 128 + signal.SIGKILL


def supervise(child_argv: Sequence[str], env: Mapping[str, str] | None = None, *,
              max_backoff_s: float = 10.0, stop_timeout_s: float = 30.0) -> int:
    """Run ``child_argv`` until asked to stop, restarting it after crashes (not start-up failures).

    Returns:
        the child's last exit status.
    """
    stopping: list[float] = []  # when the stop was asked for
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    ready_file = Path(tempfile.mkdtemp(prefix="silvertine-worker-")) / "ready"
    base_env = dict(os.environ if env is None else env)
    backoff_s, restarts = 1.0, 0
    while True:
        ready_file.unlink(missing_ok=True)
        started = time.monotonic()
        child = subprocess.Popen(
            list(child_argv),
            env={**base_env, READY_FILE_VARIABLE: str(ready_file),
                 RESTARTS_VARIABLE: str(restarts)},
            preexec_fn=die_with_parent_preexec(os.getpid()))
        status = _wait(child, stopping, stop_timeout_s)
        if stopping:
            return status
        if not ready_file.exists():
            if status not in STARTUP_FAILURE_EXITS:  # those printed their own line
                print(f"silvertine: worker failed at start-up (status {status}); "
                      "not started again", file=sys.stderr, flush=True)
            return status
        if time.monotonic() - started > _HEALTHY_RUN_S:
            backoff_s = 1.0
        print(f"silvertine: worker exited with status {status}; restarting in {backoff_s:.0f}s",
              file=sys.stderr, flush=True)
        deadline = time.monotonic() + backoff_s
        while not stopping and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        if stopping:
            return status
        backoff_s = min(backoff_s * 2, max_backoff_s)
        restarts += 1


def _wait(child: subprocess.Popen[bytes], stopping: list[float], stop_timeout_s: float) -> int:
    """Wait for ``child`` to exit; kill it if a requested stop takes over ``stop_timeout_s``."""
    while (status := child.poll()) is None:
        if stopping and time.monotonic() - stopping[0] > stop_timeout_s:
            print(f"silvertine: worker did not stop within {stop_timeout_s:.0f}s; killing it",
                  file=sys.stderr, flush=True)
            child.kill()
            child.wait()
            return _KILLED_BY_SIGKILL
        time.sleep(_POLL_S)
    # As a shell reports it: a child ended by signal N exits 128 + N.
    return status if status >= 0 else 128 - status
