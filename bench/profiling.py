"""Sample a running worker with py-spy and fold the stacks into tables.

py-spy (``pip install py-spy``) attaches to a PID from outside, so the worker
runs unmodified; ``--nonblocking`` keeps it from pausing the worker per sample.
Only non-idle samples are recorded, so the shares are shares of the *CPU* the
worker's threads burned while the clock ran. Time spent in C (msgspec, the
socket layer, hashlib) shows up as self time of the Python frame that called it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import REPO_ROOT, SOURCE_TREE


def py_spy_binary() -> str | None:
    """Locate py-spy beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@dataclass
class Sampler:
    """A ``py-spy record`` process attached to ``pid`` and its subprocesses (a supervised
    worker's child); :meth:`stop` ends it by its PID."""

    pid: int
    output: Path
    rate: int = 250
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sampler:
        binary = py_spy_binary()
        if binary is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        log = self.output.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(self.pid), "--subprocesses", "--format", "raw",
             "--threads",
             "--nonblocking", "--full-filenames", "--rate", str(self.rate),
             "--output", str(self.output)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGINT (py-spy writes its output on it), then wait; SIGKILL only as a last resort."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _short(path_and_line: str) -> str:
    """``/…/site-packages/faust/streams.py:123`` → ``faust/streams.py``."""
    path = path_and_line.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", f"{SOURCE_TREE}/", f"{REPO_ROOT}/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def _frame_key(frame: str) -> str:
    """``func (path:line)`` → ``func (short path)``: one key per function."""
    if frame.endswith(")") and " (" in frame:
        name, location = frame[:-1].rsplit(" (", 1)
        return f"{name} ({_short(location)})"
    return frame


def _is_plumbing(key: str) -> bool:
    """Frames every stack shares (event loop, CLI, thread start): no information."""
    package = _package(key)
    return (package.startswith("stdlib") or package in ("click", "<frozen runpy>", "bench")
            or key.startswith(("Worker.execute_from_commandline", "worker (",
                               "_fails_cleanly", "ServiceThread.", "WorkerThread.")))


def _keys_with_callers(keys: list[str]) -> list[str]:
    """Name generated code (``<lambda> (<string>)``, e.g. a NamedTuple's ``__new__``)
    after its caller, so two of them do not fold into one row."""
    out = []
    for i, key in enumerate(keys):
        if "(<string>)" in key and i > 0:
            key = f"{key} ← {keys[i - 1].split(' (')[0]}"
        out.append(key)
    return out


def _package(frame_key: str) -> str:
    frame_key = frame_key.split(" ← ", 1)[0]
    location = frame_key[:-1].rsplit(" (", 1)[-1] if frame_key.endswith(")") else frame_key
    head = location.split("/", 1)[0]
    if head.endswith(".py"):
        return f"stdlib {head.removesuffix('.py')}"
    if head in ("asyncio", "concurrent", "json", "logging", "email", "http", "importlib"):
        return f"stdlib {head}"
    return head


@dataclass
class Profile:
    """Folded py-spy samples of one worker."""

    total: int = 0
    self_counts: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    threads: Counter[str] = field(default_factory=Counter)
    packages: Counter[str] = field(default_factory=Counter)
    attributed: Counter[str] = field(default_factory=Counter)
    """Self time charged to the nearest frame outside the standard library: who
    asked for the socket write, the ``select``, the ``readexactly``."""

    @classmethod
    def load(cls, path: Path) -> Profile:
        profile = cls()
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = frames[0].split(":", 1)[-1].strip() if frames[0].startswith("thread") else "?"
            keys = _keys_with_callers([_frame_key(f) for f in frames[1:]])
            keys = keys or ["<no python frame>"]
            profile.total += count
            profile.threads[thread] += count
            profile.self_counts[keys[-1]] += count
            profile.packages[_package(keys[-1])] += count
            owner = next((k for k in reversed(keys) if not _package(k).startswith("stdlib")),
                         keys[-1])
            if _is_plumbing(owner):
                owner = f"the event loop itself ({thread}: select, callbacks)"
            profile.attributed[owner] += count
            for key in set(keys):
                if not _is_plumbing(key):
                    profile.inclusive[key] += count
        return profile

    def markdown(self, top: int = 25, cpu_us_per_event: float | None = None) -> str:
        """Tables of the top functions by self and by inclusive time, and of threads/packages."""
        if not self.total:
            return "py-spy recorded no samples."

        def pct(n: int) -> str:
            return f"{100 * n / self.total:.1f}%"

        def us(n: int) -> str:
            if cpu_us_per_event is None:
                return ""
            return f" | {cpu_us_per_event * n / self.total:.2f}"

        unit = " | ≈ µs/event" if cpu_us_per_event is not None else ""
        sep = "---:|" if cpu_us_per_event is not None else ""
        parts = [f"{self.total:,} non-idle samples.", "",
                 "Share of samples per thread (the Faust worker runs aiokafka's consumer "
                 "in a second thread; both contend for the GIL):", "",
                 "| thread | share |", "|---|---:|"]
        parts += [f"| {name} | {pct(n)} |" for name, n in self.threads.most_common()]
        parts += ["", "Self time by package (leaf frame's file):", "",
                  f"| package | self{unit} |", f"|---|---:|{sep}"]
        parts += [f"| {name} | {pct(n)}{us(n)} |" for name, n in self.packages.most_common(12)]
        parts += ["", f"Top {top} functions by **self** time:", "",
                  f"| function | self{unit} |", f"|---|---:|{sep}"]
        parts += [f"| `{name}` | {pct(n)}{us(n)} |"
                  for name, n in self.self_counts.most_common(top)]
        parts += ["", f"Top {top} by self time charged to the **nearest frame outside the "
                  "standard library** (who asked for the socket write, the `select`, ...):",
                  "", f"| function | self{unit} |", f"|---|---:|{sep}"]
        parts += [f"| `{name}` | {pct(n)}{us(n)} |"
                  for name, n in self.attributed.most_common(top)]
        parts += ["", f"Top {top} functions by **inclusive** time (callees included; event "
                  "loop, CLI and thread start-up frames left out):", "",
                  f"| function | inclusive{unit} |", f"|---|---:|{sep}"]
        parts += [f"| `{name}` | {pct(n)}{us(n)} |"
                  for name, n in self.inclusive.most_common(top)]
        return "\n".join(parts)

    def share(self, needle: str) -> float:
        """Inclusive share of the first function whose key contains ``needle`` (0..1)."""
        for name, n in self.inclusive.most_common():
            if needle in name:
                return n / self.total
        return 0.0
