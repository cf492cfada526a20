"""What every scenario needs: the stack, subprocesses, start marks, polling, CPU time.

Measuring rules the helpers enforce (DESIGN §5, "measuring trap"):

* The clock of a throughput run starts when the process under test hands its
  *first* consumed message to its own code (it writes ``time.time()`` to a
  mark file) and stops when the *Redis stream* holds every event (``XLEN``
  polled from here). Nothing the process says about itself stops the clock,
  so deferred work (sink writes, changelog sends) cannot flatter a figure.
* Processes are started with ``die_with_parent`` and stopped by their PID only.
* Wall time on a shared 2-core box is noisy: scenarios interleave their
  variants run by run and also report CPU seconds per event of each process,
  read from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.embedded import processes as server_processes
from silvertine_streams.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A run could not be measured (a process died, a deadline passed)."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    return server_processes.pick_free_port()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def settings_env(settings: Settings, source_tree: Path = REPO_ROOT, **extra: str) -> dict[str, str]:
    """``os.environ`` without any ``SILVERTINE_*``, plus variables reproducing ``settings``.

    ``source_tree`` goes first on ``PYTHONPATH`` (then this repo, for ``bench``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILVERTINE_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"SILVERTINE_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
        p for p in (str(source_tree), str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    ))
    env.update(extra)
    return env


@dataclass
class Child:
    """A subprocess of a scenario, with its own log file; stopped by PID only."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path = REPO_ROOT
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def python_module(
        cls, name: str, module: str, env: Mapping[str, str], log_path: Path, *args: str,
        cwd: Path = REPO_ROOT,
    ) -> Child:
        """A ``python -m module args...`` child with this interpreter, run in ``cwd``.

        ``python -m`` puts its working directory first on ``sys.path``, so ``cwd``
        picks the source tree the child imports ``silvertine_streams`` from.
        """
        return cls(name, [sys.executable, "-m", module, *args], env, log_path, cwd)

    @classmethod
    def python_script(
        cls, name: str, script: Path, env: Mapping[str, str], log_path: Path, *args: str,
        cwd: Path = REPO_ROOT,
    ) -> Child:
        """A ``python script args...`` child: ``sys.path`` starts with the script's
        folder, then ``PYTHONPATH`` (whose first entry picks the source tree)."""
        return cls(name, [sys.executable, str(script), *args], env, log_path, cwd)

    def start(self) -> Child:
        self.process = server_processes.spawn(
            self.name, self.argv, self.log_path, cwd=self.cwd, env=self.env,
            die_with_parent=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.alive() else None

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        return server_processes.log_tail(self.log_path, lines)

    def check_alive(self, doing: str) -> None:
        if not self.alive():
            code = self.process.poll() if self.process is not None else None
            raise BenchError(
                f"{self.name} (pid {self.pid}) exited with {code} while {doing}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )


@dataclass(frozen=True)
class Experiment:
    """A variant of the product to measure beside the real one (``--experiment``).

    Attributes:
        name: its label in the table.
        source_tree: a scratch copy of the repo whose ``silvertine_streams`` the
            worker imports (``REPO_ROOT`` for settings-only experiments).
        env: extra environment variables (e.g. ``SILVERTINE_FETCH_WAIT_MS``).
    """

    name: str
    source_tree: Path = REPO_ROOT
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Experiment:
        """``NAME=PATH[,KEY=VALUE...]``; PATH ``.`` means this repo."""
        name, sep, rest = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"experiment {spec!r}: expected NAME=PATH[,KEY=VALUE...]")
        path, *pairs = rest.split(",")
        tree = REPO_ROOT if path in ("", ".") else Path(path).resolve()
        if not (tree / "silvertine_streams").is_dir():
            raise ValueError(f"experiment {name}: {tree} holds no silvertine_streams/")
        env = tuple(tuple(p.split("=", 1)) for p in pairs if p)
        if any(len(pair) != 2 for pair in env):
            raise ValueError(f"experiment {name}: settings must be KEY=VALUE")
        return cls(name, tree, env)  # type: ignore[arg-type]  # pairs checked above


@dataclass
class BenchContext:
    """What a scenario gets from the runner.

    Attributes:
        settings: settings with the embedded stack's ``kafka_url`` / ``redis_url``.
        work_dir: a fresh directory for this bench run (logs, data dirs, profiles).
        runs: how many times to repeat each measured variant.
        quick: smaller event counts (a smoke run of the bench itself).
        profile: ``"auto"`` (profile when a target is missed), ``"always"``, ``"never"``.
        server_pids: PIDs of the embedded servers, for CPU accounting.
        experiments: product variants to measure beside the product (``--experiment``).
    """

    settings: Settings
    work_dir: Path
    runs: int
    quick: bool
    profile: str
    server_pids: dict[str, int] = field(default_factory=dict)
    say: Callable[[str], None] = print
    experiments: list[Experiment] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    """Scenario options from ``-o KEY=VALUE`` (each scenario documents its own)."""

    def redis(self) -> Redis:
        assert self.settings.redis_url is not None
        return Redis.from_url(self.settings.redis_url, socket_timeout=30.0)

    def server_cpu(self) -> dict[str, float | None]:
        return {name: cpu_seconds(pid) for name, pid in self.server_pids.items()}


def start_stack(work_dir: Path) -> tuple[EmbeddedStack, Settings, dict[str, int]]:
    """Start the bench's own Tansu + redis-server (never a user's external servers).

    The bench flushes its Redis between runs, so it always runs its own servers,
    configured exactly as the product's embedded stack (Redis AOF,
    ``appendfsync always``; Tansu memory storage), whatever ``SILVERTINE_*_URL`` say.
    """
    base = load_settings(
        data_dir=work_dir / "stack", kafka_url=None, redis_url=None, kafka_port=0,
        redis_port=0, metrics_port=0,
    )
    stack = EmbeddedStack(base, die_with_parent=True)
    settings = stack.up()
    pids = {status.name: status.pid for status in stack.status() if status.pid is not None}
    return stack, settings, pids


async def wait_for_mark(path: Path, child: Child, timeout_s: float = 90.0) -> float:
    """Wait until ``child`` wrote its start mark; return the time it wrote (epoch s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text:
            return float(text)
        child.check_alive("starting up (no first message consumed yet)")
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name} consumed nothing within {timeout_s:g}s:\n"
                             f"{child.log_tail()}")
        await asyncio.sleep(0.005)


async def wait_for_xlen(
    redis: Redis, key: str, count: int, child: Child, timeout_s: float, interval_s: float = 0.005
) -> float:
    """Poll ``XLEN key`` until it reaches ``count``; return ``time.time()`` when seen."""
    deadline = time.monotonic() + timeout_s
    last = 0
    while True:
        last = int(await redis.xlen(key))
        if last >= count:
            return time.time()
        child.check_alive(f"filling {key} ({last}/{count})")
        if time.monotonic() > deadline:
            raise BenchError(f"{key} held {last}/{count} after {timeout_s:g}s; "
                             f"{child.name} log:\n{child.log_tail()}")
        await asyncio.sleep(interval_s)
