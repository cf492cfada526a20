"""Samples, statistics and the ``RESULTS.md`` writer shared by every scenario."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.harness import REPO_ROOT, SOURCE_TREE

NOTES_TITLE = "Analysis and recommended product changes"

@dataclass
class Run:
    """One measured run of one variant."""

    events: int
    seconds: float
    cpu_s: dict[str, float | None] = field(default_factory=dict)
    """CPU seconds spent during the run, per process (e.g. worker, redis, kafka)."""
    extra: dict[str, object] = field(default_factory=dict)
    ended_at: float = 0.0
    """``time.time()`` when the end condition was seen."""
    values: dict[str, float] = field(default_factory=dict)
    """Other measured figures of the run (``p99_ms``, ``us_per_event``, ...), by metric key."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    def value(self, key: str) -> float | None:
        """``rate`` (events/s) or one of :attr:`values`."""
        if key == "rate":
            return self.rate if self.events and self.seconds > 0 else None
        return self.values.get(key)

    def cpu_us_per_event(self, process: str) -> float | None:
        cpu = self.cpu_s.get(process)
        return None if cpu is None or not self.events else cpu / self.events * 1e6


@dataclass
class Row:
    """One variant of a scenario: its runs, summarised as median (min–max)."""

    key: str
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [run.rate for run in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.runs else float("nan")

    def cores_median(self) -> float | None:
        """CPU seconds of all measured processes per wall second (how busy the box was
        for us: below ~2 on 2 cores means waiting, or other load)."""
        values = [sum(v for v in run.cpu_s.values() if v is not None) / run.seconds
                  for run in self.runs if run.seconds > 0 and run.cpu_s]
        return statistics.median(values) if values else None

    def cpu_median(self, process: str) -> float | None:
        values = [v for run in self.runs if (v := run.cpu_us_per_event(process)) is not None]
        return statistics.median(values) if values else None

    def values(self, key: str) -> list[float]:
        return [v for run in self.runs if (v := run.value(key)) is not None]

    def median_of(self, key: str) -> float:
        values = self.values(key)
        return statistics.median(values) if values else float("nan")


@dataclass(frozen=True)
class Metric:
    """A column of a scenario's table: ``rate`` or a key of :attr:`Run.values`."""

    key: str
    label: str
    digits: int = 1


@dataclass
class Ratio:
    """``numerator / denominator`` of two rows' medians, with the range of paired runs."""

    label: str
    numerator: str
    denominator: str
    metric: str = "rate"


@dataclass
class Target:
    label: str
    met: bool
    detail: str


@dataclass
class ScenarioReport:
    """Everything one scenario contributes to ``RESULTS.md``."""

    name: str
    title: str
    description: str
    rows: list[Row]
    ratios: list[Ratio] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    """Extra ``(heading, markdown)`` blocks: profiles, findings, notes."""
    cpu_processes: tuple[str, ...] = ("worker", "redis", "kafka")
    metrics: list[Metric] = field(default_factory=list)
    """Columns of the table; empty = the throughput table (events/s, CPU, ceiling)."""
    unit_note: str = ""
    """One line under the table saying what a row's figures are."""

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    def add_notes(self) -> None:
        """Append the hand-written ``bench/notes/<name>.md``, if there is one."""
        notes = Path(__file__).with_name("notes") / f"{self.name}.md"
        if notes.exists():
            self.sections.append((NOTES_TITLE, notes.read_text()))

    def ratio_values(self, ratio: Ratio) -> tuple[float, float, float]:
        """Median ratio, and min/max over runs paired by index (same round)."""
        num, den = self.row(ratio.numerator), self.row(ratio.denominator)
        key = ratio.metric
        paired = [a / b for x, y in zip(num.runs, den.runs, strict=False)
                  if (a := x.value(key)) is not None and (b := y.value(key))]
        top, bottom = num.median_of(key), den.median_of(key)
        med = top / bottom if bottom else float("nan")
        return med, min(paired, default=float("nan")), max(paired, default=float("nan"))


# --- machine facts ----------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "silvertine_streams"],
                               cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{rev}{' + uncommitted changes in silvertine_streams/' if dirty else ''}"


def _source() -> str:
    """What was measured: this repo's revision, or the ``--tree`` snapshot."""
    if SOURCE_TREE == REPO_ROOT:
        return f"{_version('silvertine-streams')} @ {_git_revision()}"
    note = SOURCE_TREE / "SOURCE.txt"
    what = note.read_text().strip() if note.exists() else "no SOURCE.txt"
    return f"snapshot `{SOURCE_TREE}` ({what}); this repo is at {_git_revision()}"


def machine_facts(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Facts that make a figure comparable: hardware, software versions, date."""
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    facts = {
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable), {_cpu_model()}",
        "memory": f"{mem_gib:.1f} GiB",
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "faust-streaming": _version("faust-streaming"),
        "mode-streaming": _version("mode-streaming"),
        "aiokafka": _version("aiokafka"),
        "redis (redis-py)": _version("redis"),
        "msgspec": _version("msgspec"),
        "silvertine-streams": _source(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    facts.update(extra or {})
    return facts


# --- markdown ---------------------------------------------------------------


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_opt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(facts: dict[str, str], reports: list[ScenarioReport], command: str) -> str:
    lines = [
        "# silvertine-streams benchmarks",
        "",
        f"Written by `{command}` (`make bench`). Do not edit by hand: rerun it (after "
        "editing `bench/notes/`, `python -m bench --renote <work dir>/results.pickle` "
        "rewrites it around the same measurements).",
        "This machine is shared and noisy: compare ratios measured in one run, "
        "not absolute figures across runs.",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    for report in reports:
        lines += ["", f"## {report.title}", "", report.description.strip(), ""]
        if report.metrics:
            lines += _metric_table(report)
        else:
            lines += _throughput_table(report)
        if report.ratios:
            lines += ["", "| ratio | median | min | max (runs paired by round) |",
                      "|---|---:|---:|---:|"]
            for ratio in report.ratios:
                med, lo, hi = report.ratio_values(ratio)
                lines.append(f"| {ratio.label} | **{med:.2f}×** | {lo:.2f}× | {hi:.2f}× |")
        if report.targets:
            lines += ["", "| target | met | measured |", "|---|:---:|---|"]
            for target in report.targets:
                lines.append(f"| {target.label} | {'yes' if target.met else '**no**'} | "
                             f"{target.detail} |")
        for heading, body in report.sections:
            lines += ["", f"### {heading}", "", body.strip()]
        lines += ["", "<details><summary>every run</summary>", "",
                  "| variant | round | events | seconds | events/s | values | CPU s | extra |",
                  "|---|---:|---:|---:|---:|---|---|---|"]
        for row in report.rows:
            for i, run in enumerate(row.runs, 1):
                cpu = ", ".join(f"{k} {_fmt_opt(v, 2)}" for k, v in run.cpu_s.items())
                values = ", ".join(f"{k}={_fmt_num(v)}" for k, v in run.values.items())
                extra = ", ".join(f"{k}={v}" for k, v in run.extra.items())
                lines.append(f"| {row.label} | {i} | {run.events:,} | {run.seconds:.3f} | "
                             f"{_fmt_rate(run.rate)} | {values} | {cpu} | {extra} |")
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _fmt_num(value: float) -> str:
    if value != value:  # NaN
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _metric_table(report: ScenarioReport) -> list[str]:
    """One column per metric: median (min–max) over the runs; then CPU µs/event."""
    procs = report.cpu_processes
    lines = ["| variant | runs | " + " | ".join(m.label for m in report.metrics)
             + "".join(f" | {p} CPU µs/event" for p in procs) + " |",
             "|---|---:|" + "---:|" * (len(report.metrics) + len(procs))]
    for row in report.rows:
        cells = []
        for metric in report.metrics:
            values = row.values(metric.key)
            if not values:
                cells.append("–")
                continue
            fmt = f"{{:,.{metric.digits}f}}"
            med = fmt.format(statistics.median(values))
            spread = (f" ({fmt.format(min(values))}–{fmt.format(max(values))})"
                      if len(values) > 1 else "")
            cells.append(f"**{med}**{spread}")
        cpu = "".join(f" | {_fmt_opt(row.cpu_median(p), 2)}" for p in procs)
        lines.append(f"| {row.label} | {len(row.runs)} | " + " | ".join(cells) + cpu + " |")
    lines += ["", "Each cell: **median** (min–max) over the runs."
              + (f" {report.unit_note}" if report.unit_note else "")]
    return lines


def _throughput_table(report: ScenarioReport) -> list[str]:
    procs = report.cpu_processes
    lines: list[str] = []
    lines += [
        "| variant | events/run | runs | **median events/s** | min | max | "
        + " | ".join(f"{p} CPU µs/event" for p in procs)
        + " | cores busy | worker-CPU ceiling events/s |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * (len(procs) + 2),
    ]
    for row in report.rows:
        events = row.runs[0].events if row.runs else 0
        rates = row.rates
        worker = row.cpu_median("worker")
        ceiling = _fmt_rate(1e6 / worker) if worker else "–"
        lines.append(
            f"| {row.label} | {events:,} | {len(row.runs)} | **{_fmt_rate(row.median)}** | "
            f"{_fmt_rate(min(rates, default=float('nan')))} | "
            f"{_fmt_rate(max(rates, default=float('nan')))} | "
            + " | ".join(_fmt_opt(row.cpu_median(p)) for p in procs)
            + f" | {_fmt_opt(row.cores_median(), 2)} | {ceiling} |"
        )
    if "worker" in procs:
        lines += ["", "*cores busy* = CPU seconds of the three processes per wall second "
                  "(of the machine's 2 cores). *worker-CPU ceiling* = 10⁶ / (worker CPU "
                  "µs/event): what one worker process could reach if it never waited "
                  "(I/O fully overlapped, Redis and the broker on other cores or hosts)."]
    return lines


SOAK_BEGIN, SOAK_END = "<!-- soak:begin -->", "<!-- soak:end -->"
"""The soak's section (``bench/soak.py``): a separate, longer run that this writer keeps."""


def write_results(path: Path, facts: dict[str, str], reports: list[ScenarioReport],
                  command: str) -> None:
    """Write ``path`` from these reports, keeping its soak section if it has one."""
    text = render(facts, reports, command)
    old = path.read_text() if path.exists() else ""
    if SOAK_BEGIN in old and SOAK_END in old:
        block = old[old.index(SOAK_BEGIN):old.index(SOAK_END) + len(SOAK_END)]
        text += "\n" + block + "\n"
    path.write_text(text)
