"""Running the operations commands as a user would: from a script, or at a terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from silvertine_streams.settings import Settings, settings_env


def run_ops(settings: Settings, *args: str, stdin: str | None = None,
            terminal: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``silvertine <args>`` in a child process, as a user would.

    Args:
        settings: the servers the command talks to (passed as environment).
        args: the command line after ``silvertine``.
        stdin: what the user types.
        terminal: stdin is a terminal (a pseudo-terminal the answer is typed
            into), as for a person at a shell; otherwise it is a pipe, as for
            a script or CI.
    """
    argv = [sys.executable, "-m", "silvertine_streams", *args]
    env = settings_env(settings, os.environ)
    if not terminal:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                              input=stdin)
    typist, tty = pty.openpty()
    try:
        child = subprocess.Popen(argv, env=env, stdin=tty, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        os.close(tty)
        tty = -1
        if stdin:
            # The terminal holds the typed line until the command reads its answer.
            os.write(typist, stdin.encode())
        try:
            out, err = child.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
    finally:
        os.close(typist)
        if tty >= 0:
            os.close(tty)
    return subprocess.CompletedProcess(argv, child.returncode, out, err)
