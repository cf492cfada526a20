"""The ``silvertine`` command as a user runs it (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SILVERTINE_")}
    return subprocess.run([sys.executable, "-m", "silvertine_streams", *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)


def test_a_bad_setting_stops_the_worker_with_a_message_naming_it() -> None:
    result = run_cli("worker", SILVERTINE_PARTITIONS="abc")
    assert result.returncode != 0
    assert "SILVERTINE_PARTITIONS" in result.stderr
    assert "Traceback" not in result.stderr


def test_stack_up_status_down(tmp_path: object) -> None:
    data_dir = str(tmp_path)
    up = run_cli("stack", "up", SILVERTINE_DATA_DIR=data_dir)
    try:
        assert up.returncode == 0, up.stderr
        assert "SILVERTINE_KAFKA_URL=kafka://127.0.0.1:" in up.stdout
        status = run_cli("stack", "status", SILVERTINE_DATA_DIR=data_dir)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" up ") == 2
    finally:
        down = run_cli("stack", "down", SILVERTINE_DATA_DIR=data_dir)
    assert down.returncode == 0, down.stderr
    after = run_cli("stack", "status", SILVERTINE_DATA_DIR=data_dir)
    assert after.returncode == 1
    assert after.stdout.count(" down") == 2
