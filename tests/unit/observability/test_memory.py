"""Unit tests for silvertine_streams.observability.memory (fake clock, injected RSS)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from silvertine_streams.observability.memory import MemoryGuard, rss_bytes

MB = 1 << 20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


class FakeClock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


class FakeRss:
    """An RSS source that returns what the test sets and counts its reads."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.value


def vm_rss() -> int:
    """Return VmRSS from /proc/self/status, the kernel's own figure, in bytes."""
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


# --- rss_bytes -----------------------------------------------------------------


@linux_only
def test_rss_bytes_agrees_with_the_kernels_status_file() -> None:
    rss = rss_bytes()
    assert rss > 0
    assert rss % os.sysconf("SC_PAGESIZE") == 0
    assert abs(rss - vm_rss()) < 8 * MB


@linux_only
def test_rss_bytes_follows_allocations() -> None:
    before = rss_bytes()
    block = b"\x01" * (64 * MB)  # written, so resident
    after = rss_bytes()
    assert after - before >= 48 * MB
    del block


@linux_only
def test_rss_bytes_in_a_forked_child_reads_the_childs_own_memory() -> None:
    rss_bytes()  # the parent opens its /proc/self/statm first
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: grow, then report what rss_bytes sees
        try:
            baseline = rss_bytes()
            block = b"\x01" * (64 * MB)
            os.write(write_end, f"{baseline} {rss_bytes()} {len(block)}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        baseline, grown, _ = map(int, pipe.read().split())
    os.waitpid(pid, 0)
    assert grown - baseline >= 48 * MB  # a stale parent fd would see no growth


# --- MemoryGuard ---------------------------------------------------------------


def test_a_zero_limit_is_off_and_never_reads() -> None:
    def unreadable() -> int:
        raise AssertionError("read the RSS with the guard off")

    guard = MemoryGuard(0, read_rss=unreadable)
    assert not guard.enabled
    assert guard.should_throttle() is False
    assert guard.pressure == 0.0


def test_guard_throttles_at_the_ratio_of_the_limit() -> None:
    clock, rss = FakeClock(), FakeRss(84 * MB)
    guard = MemoryGuard(100 * MB, throttle_ratio=0.85, check_every_s=0.5, now=clock, read_rss=rss)
    assert guard.enabled
    assert guard.should_throttle() is False
    assert guard.pressure == pytest.approx(0.84)
    rss.value = 85 * MB
    clock.t += 0.5
    assert guard.should_throttle() is True
    assert guard.pressure == pytest.approx(0.85)
    assert guard.rss == 85 * MB
    rss.value = 40 * MB
    clock.t += 0.5
    assert guard.should_throttle() is False
    assert guard.throttled_total == 1


def test_guard_reads_at_most_once_per_interval() -> None:
    clock, rss = FakeClock(), FakeRss(10 * MB)
    guard = MemoryGuard(100 * MB, check_every_s=0.5, now=clock, read_rss=rss)
    assert rss.reads == 1  # at construction
    rss.value = 99 * MB
    for _ in range(1000):
        assert guard.should_throttle() is False  # cached: the rise is not seen yet
    clock.t += 0.499
    assert guard.should_throttle() is False
    assert rss.reads == 1
    clock.t += 0.001
    assert guard.should_throttle() is True
    assert rss.reads == 2


def test_guard_with_zero_interval_reads_every_time() -> None:
    clock, rss = FakeClock(), FakeRss(10 * MB)
    guard = MemoryGuard(100 * MB, check_every_s=0.0, now=clock, read_rss=rss)
    for _ in range(3):
        guard.should_throttle()
    assert rss.reads == 4


def test_guard_checks_at_construction_so_an_unreadable_rss_fails_at_start() -> None:
    def unreadable() -> int:
        raise FileNotFoundError("/proc/self/statm")

    with pytest.raises(OSError):
        MemoryGuard(100 * MB, read_rss=unreadable)
    over = MemoryGuard(100 * MB, now=FakeClock(), read_rss=FakeRss(95 * MB))
    assert over.should_throttle() is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit_bytes": -1},
        {"limit_bytes": MB, "throttle_ratio": 0.0},
        {"limit_bytes": MB, "throttle_ratio": 1.5},
        {"limit_bytes": MB, "check_every_s": -0.1},
    ],
)
def test_guard_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MemoryGuard(read_rss=FakeRss(0), **kwargs)  # type: ignore[arg-type]  # on purpose


@linux_only
def test_guard_on_the_real_process() -> None:
    guard = MemoryGuard(1 << 50)
    assert guard.should_throttle() is False
    assert 0.0 < guard.pressure < 1e-3
    tight = MemoryGuard(max(1, rss_bytes() // 2))
    assert tight.should_throttle() is True
    assert tight.pressure > 1.0
