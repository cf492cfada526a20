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
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.embedded import processes as server_processes
from silvertine_streams.settings import Settings, load_settings, settings_env

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_TREE = Path(os.environ.get("BENCH_SOURCE_TREE") or REPO_ROOT).resolve()
"""Where the bench and every process it starts import ``silvertine_streams`` from:
this repo, or a snapshot given with ``python -m bench --tree PATH``."""
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A run could not be measured (a process died, a deadline passed)."""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    return server_processes.pick_free_port()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None once it is gone."""
    stat = _stat(pid)
    # stat[0] is field 3 (state); utime and stime are fields 14 and 15.
    return None if stat is None else (int(stat[11]) + int(stat[12])) / _CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` and its live descendants (a supervised worker's child);
    None once ``pid`` is gone."""
    total = cpu_seconds(pid)
    if total is None:
        return None
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents.setdefault(int(stat[1]), []).append(int(entry.name))
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        total += cpu_seconds(child) or 0.0
        todo += parents.get(child, [])
    return total


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on: [state, ppid, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def child_env(settings: Settings, source_tree: Path = SOURCE_TREE, **extra: str
              ) -> dict[str, str]:
    """The environment of a bench child: the product's ``settings_env`` and where to import from.

    That is :func:`silvertine_streams.settings.settings_env` (``os.environ``
    without any ``SILVERTINE_*``, plus variables reproducing ``settings``), with
    ``source_tree`` first on ``PYTHONPATH`` (then this repo, for ``bench``) and
    ``extra`` on top.
    """
    env = settings_env(settings, os.environ)
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
    cwd: Path = SOURCE_TREE
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def python_module(
        cls, name: str, module: str, env: Mapping[str, str], log_path: Path, *args: str,
        cwd: Path = SOURCE_TREE,
    ) -> Child:
        """A ``python -m module args...`` child with this interpreter, run in ``cwd``.

        ``python -m`` puts its working directory first on ``sys.path``, so ``cwd``
        picks the source tree the child imports ``silvertine_streams`` from.
        """
        return cls(name, [sys.executable, "-m", module, *args], env, log_path, cwd)

    @classmethod
    def python_script(
        cls, name: str, script: Path, env: Mapping[str, str], log_path: Path, *args: str,
        cwd: Path = SOURCE_TREE,
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
        """CPU seconds of the process and its children (a supervised worker's)."""
        return tree_cpu_seconds(self.pid) if self.alive() else None

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

    def kill(self) -> None:
        """SIGKILL (``kill -9``): no shutdown, no commit, no flush. A supervised worker's
        child dies with it (``PR_SET_PDEATHSIG``): the whole worker is gone."""
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

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
            worker imports (``SOURCE_TREE`` for settings-only experiments).
        env: extra environment variables (e.g. ``SILVERTINE_FETCH_WAIT_MS``).
    """

    name: str
    source_tree: Path = SOURCE_TREE
    env: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Experiment:
        """``NAME=PATH[,KEY=VALUE...]``; PATH ``.`` means the tree under test."""
        name, sep, rest = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"experiment {spec!r}: expected NAME=PATH[,KEY=VALUE...]")
        path, *pairs = rest.split(",")
        tree = SOURCE_TREE if path in ("", ".") else Path(path).resolve()
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


def start_stack(work_dir: Path, **overrides: object
                ) -> tuple[EmbeddedStack, Settings, dict[str, int]]:
    """Start the bench's own Tansu + redis-server (never a user's external servers).

    The bench flushes its Redis between runs, so it always runs its own servers,
    configured exactly as the product's embedded stack (Redis AOF,
    ``appendfsync always``; Tansu memory storage), whatever ``SILVERTINE_*_URL`` say.
    ``overrides``: other settings for this stack's workers (e.g. ``partitions=8``).
    """
    base = load_settings(
        data_dir=work_dir / "stack", kafka_url=None, redis_url=None, kafka_port=0,
        redis_port=0, metrics_port=0, **overrides,
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


# --- the processes scenarios run -------------------------------------------

WORKER_SCRIPT = Path(__file__).with_name("silvertine_worker.py")


def run_dir(ctx: BenchContext, scenario: str, label: str) -> Path:
    """A fresh directory for one process of one run: its mark, log and data."""
    path = ctx.work_dir / scenario / f"{label}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    return path


@dataclass
class Worker:
    """A ``silvertine worker`` started by :func:`start_worker` (not started yet)."""

    child: Child
    mark: Path
    """Where it writes ``time.time()`` when it consumes its first message."""
    settings: Settings
    started_at: float = 0.0

    def start(self) -> Worker:
        self.started_at = time.time()
        self.child.start()
        return self


def worker(
    ctx: BenchContext, scenario: str, label: str, *, app_id: str | None = None,
    experiment: Experiment | None = None, env: Mapping[str, str] | None = None,
    metrics_port: int = 0, supervised: bool = True, **settings_update: object,
) -> Worker:
    """The one place scenarios build a product worker (``bench/silvertine_worker.py``).

    ``supervised``: as ``silvertine worker`` runs it, under the product's supervisor
    (when the product has one), which restarts a worker that exits on its own; the
    bench's PID is then the supervisor's, CPU is the process tree's, py-spy follows
    subprocesses, and ``kill -9`` takes the worker with it.

    Args:
        app_id: the consumer group; None = a fresh one (reads every topic from the start).
        experiment: a scratch source tree and/or extra settings to run instead.
        env: more environment variables (``SILVERTINE_*`` overrides, ``BENCH_*`` knobs).
        settings_update: settings fields to change (e.g. ``session_timeout_s=6``).
    """
    directory = run_dir(ctx, scenario, label)
    mark = directory / "mark"
    settings = ctx.settings.model_copy(update={
        "app_id": app_id or f"bench-{label}-{uuid.uuid4().hex[:6]}",
        "data_dir": directory / "data", "web_port": free_port(),
        "metrics_port": metrics_port, **settings_update,
    })
    tree = experiment.source_tree if experiment else SOURCE_TREE
    variables = child_env(settings, tree, BENCH_MARK_FILE=str(mark),
                             BENCH_SUPERVISE="1" if supervised else "",
                             **dict(experiment.env if experiment else ()), **dict(env or {}))
    child = Child.python_script(f"silvertine worker {label}", WORKER_SCRIPT, variables,
                                directory / "process.log", cwd=directory)
    return Worker(child, mark, settings)


def floor(ctx: BenchContext, scenario: str, label: str, *, topic: str, stream: str,
          events: int = 0) -> Worker:
    """The raw floor (:mod:`bench.raw_floor`): aiokafka → pipelined XADD of ``topic`` into
    ``stream``; it exits after ``events`` events, or runs until stopped (0)."""
    directory = run_dir(ctx, scenario, label)
    mark = directory / "mark"
    s = ctx.settings
    variables = child_env(
        s, BENCH_KAFKA_URL=str(s.kafka_url), BENCH_REDIS_URL=str(s.redis_url),
        BENCH_TOPIC=topic, BENCH_STREAM=stream, BENCH_PARTITIONS=str(s.partitions),
        BENCH_EVENTS=str(events), BENCH_MARK_FILE=str(mark),
        BENCH_FETCH_WAIT_MS=str(s.fetch_wait_ms),
    )
    child = Child.python_module(f"raw floor {label}", "bench.raw_floor", variables,
                                directory / "process.log")
    return Worker(child, mark, s)
