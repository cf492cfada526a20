"""``silvertine worker`` supervises its Faust worker process and restarts it.

The Faust worker runs as a child process. When it exits without having been
asked to (a crash), the supervisor starts it again after a short backoff; the
new consumer resumes from the group's committed offsets, which never pass an
unprocessed message.
SIGTERM or SIGINT to the supervisor stops the child and then the supervisor.
A configuration error (exit status 2) is not retried.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from silvertine_streams.cli.errors import CONFIG_ERROR_EXIT
from silvertine_streams.embedded.processes import die_with_parent_preexec

log = logging.getLogger(__name__)

_HEALTHY_RUN_S = 60.0
_MAX_BACKOFF_S = 10.0


def supervise(child_argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run ``child_argv`` until asked to stop, restarting it when it exits on its own.

    Returns:
        the child's last exit status.
    """
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    backoff_s = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(list(child_argv), env=env,
                                 preexec_fn=die_with_parent_preexec(os.getpid()))
        status = child.wait()
        if stopping:
            return status
        if status == CONFIG_ERROR_EXIT:
            return status
        if time.monotonic() - started > _HEALTHY_RUN_S:
            backoff_s = 1.0
        print(f"silvertine: worker exited with status {status}; restarting in {backoff_s:.0f}s",
              file=sys.stderr, flush=True)
        deadline = time.monotonic() + backoff_s
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
        if stopping:
            return status
        backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
