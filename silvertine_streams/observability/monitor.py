"""``silvertine monitor``: a terminal dashboard over the workers' ``/metrics``.

Pure parts (no I/O, unit-tested): :func:`parse_metrics` turns Prometheus text
into a :class:`Scrape`; :func:`build_view` turns two scrapes into a
:class:`MonitorView` — rates from counter deltas between the scrapes, latency
percentiles from the histogram buckets that filled in between (or since the
worker started, on the first scrape); :func:`render_text` and
:func:`render_rich` draw it. :func:`run_monitor` is the loop around them.

Several ``--url`` (one per worker) are summed; gauges such as a circuit state
take the largest value.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]
"""Sample name (``silvertine_events_in_total``, ``..._bucket``) -> labels -> value."""

PREFIX = "silvertine_"
MAX_GAUGES = frozenset({"silvertine_circuit_open", "silvertine_clock_offset_seconds",
                        "silvertine_lane_lag"})
"""Gauges that are not summed across workers: the largest value is shown."""


@dataclass(frozen=True, slots=True)
class Scrape:
    """The samples of one read of ``/metrics`` (or several, merged).

    Attributes:
        samples: sample name -> sorted labels -> value.
        taken_at: monotonic seconds when it was read.
    """

    samples: Samples
    taken_at: float

    def get(self, name: str) -> dict[Labels, float]:
        """Return the samples of ``name`` (empty when absent)."""
        return self.samples.get(name, {})

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Sum the samples of ``name`` per value of ``label``."""
        result: dict[str, float] = {}
        for labels, value in self.get(name).items():
            key = dict(labels).get(label, "")
            result[key] = result.get(key, 0.0) + value
        return result

    def buckets(self, name: str, label: str) -> dict[str, list[tuple[float, float]]]:
        """Return a histogram's cumulative buckets ``[(le, count), ...]`` per ``label`` value."""
        grouped: dict[str, dict[float, float]] = {}
        for labels, value in self.get(f"{name}_bucket").items():
            as_dict = dict(labels)
            le = float(as_dict.get("le", "inf"))
            slot = grouped.setdefault(as_dict.get(label, ""), {})
            slot[le] = slot.get(le, 0.0) + value
        return {key: sorted(slot.items()) for key, slot in grouped.items()}


def parse_metrics(text: str, taken_at: float = 0.0) -> Scrape:
    """Parse Prometheus text exposition into a :class:`Scrape` (``silvertine_*`` only)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith(PREFIX) or sample.name.endswith("_created"):
                continue
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return Scrape(samples, taken_at)


def merge_scrapes(scrapes: Sequence[Scrape]) -> Scrape:
    """Combine the scrapes of several workers: counters and histograms add up."""
    if len(scrapes) == 1:
        return scrapes[0]
    merged: Samples = {}
    for scrape in scrapes:
        for name, values in scrape.samples.items():
            target = merged.setdefault(name, {})
            for labels, value in values.items():
                if labels in target and name in MAX_GAUGES:
                    target[labels] = max(target[labels], value)
                else:
                    target[labels] = target.get(labels, 0.0) + value
    return Scrape(merged, max(s.taken_at for s in scrapes))


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Estimate the ``q`` quantile from cumulative buckets, as Prometheus does.

    Linear interpolation inside the bucket that holds the rank; a rank in the
    ``+Inf`` bucket answers the largest finite bound. None without observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > previous_count:
            if math.isinf(bound):
                return previous_bound
            return previous_bound + (bound - previous_bound) * (
                (rank - previous_count) / (count - previous_count))
        previous_bound, previous_count = (bound if not math.isinf(bound) else previous_bound), count
    return previous_bound


def bucket_delta(current: Sequence[tuple[float, float]],
                 previous: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return the buckets filled between two scrapes (the current ones after a restart)."""
    before = dict(previous)
    delta = [(le, count - before.get(le, 0.0)) for le, count in current]
    if any(count < 0 for _, count in delta):  # the worker restarted: counters reset
        return list(current)
    return delta


def rate(current: float, previous: float | None, seconds: float | None) -> float | None:
    """Per-second increase of a counter (a reset counts from zero); None without a previous read."""
    if previous is None or not seconds or seconds <= 0:
        return None
    increase = current - previous if current >= previous else current
    return increase / seconds


@dataclass(frozen=True, slots=True)
class TypeRow:
    """One event type's line."""

    event_type: str
    events_in: float
    in_rate: float | None
    logged: float
    logged_rate: float | None
    dead_letters: float
    dedupe_hits: float
    gaps: float
    stale: float
    retries: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    batch_avg: float | None


@dataclass(frozen=True, slots=True)
class HandlerRow:
    """One handler's line."""

    handler: str
    calls: float
    call_rate: float | None
    failures: dict[str, float]
    skipped: float
    circuit_open: bool


@dataclass(slots=True)
class MonitorView:
    """Everything the dashboard shows.

    Attributes:
        taken_at: wall-clock time of the (latest) scrape.
        interval_s: seconds between the two scrapes the rates come from (None: one scrape).
        types: one row per event type seen.
        dead_letters: ``(event type, reason code) -> count``.
        handlers: one row per handler seen.
        clock: ``offset_s`` and ``synchronised`` when the clock is watched (else empty).
        lag: consumer lag (messages) per event type (empty when not exported).
        held: events held in reorder windows per event type (empty when not exported).
        shed: ``event type -> (total, rate)`` (empty when not exported).
        stages: ``stage -> (p50 ms, p99 ms)`` (empty when not exported).
        errors: endpoints that did not answer.
    """

    taken_at: datetime
    interval_s: float | None
    types: list[TypeRow] = field(default_factory=list)
    dead_letters: dict[tuple[str, str], float] = field(default_factory=dict)
    handlers: list[HandlerRow] = field(default_factory=list)
    clock: dict[str, float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    shed: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    stages: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def percentile_window(self) -> str:
        """What the latency percentiles cover (a type with no write in it shows its totals)."""
        return f"last {self.interval_s:.1f}s" if self.interval_s else "time since start"


def build_view(current: Scrape, previous: Scrape | None = None,
               now: datetime | None = None) -> MonitorView:
    """Turn a scrape (and the one before it, for rates) into a view."""
    seconds = current.taken_at - previous.taken_at if previous is not None else None
    view = MonitorView(taken_at=now or datetime.now(UTC), interval_s=seconds or None)

    def counter(name: str, label: str) -> tuple[dict[str, float], dict[str, float] | None]:
        return (current.by_label(name, label),
                previous.by_label(name, label) if previous is not None else None)

    events_in, events_in_before = counter("silvertine_events_in_total", "event_type")
    logged, logged_before = counter("silvertine_events_logged_total", "event_type")
    dead = current.by_label("silvertine_dead_letters_total", "event_type")
    dedupe = current.by_label("silvertine_dedupe_hits_total", "event_type")
    gaps = current.by_label("silvertine_sequence_gaps_total", "event_type")
    stale = current.by_label("silvertine_sequence_stale_total", "event_type")
    retries = current.by_label("silvertine_sink_retries_total", "event_type")
    latency = _percentiles(current, previous, "silvertine_sink_latency_seconds", "event_type")
    batch_sum = current.by_label("silvertine_sink_batch_size_sum", "event_type")
    batch_count = current.by_label("silvertine_sink_batch_size_count", "event_type")
    types = sorted(set(events_in) | set(logged) | set(dead) | set(retries))
    for event_type in types:
        p50, p99 = latency.get(event_type, (None, None))
        count = batch_count.get(event_type, 0.0)
        view.types.append(TypeRow(
            event_type=event_type,
            events_in=events_in.get(event_type, 0.0),
            in_rate=rate(events_in.get(event_type, 0.0),
                         _get(events_in_before, event_type), seconds),
            logged=logged.get(event_type, 0.0),
            logged_rate=rate(logged.get(event_type, 0.0), _get(logged_before, event_type), seconds),
            dead_letters=dead.get(event_type, 0.0),
            dedupe_hits=dedupe.get(event_type, 0.0),
            gaps=gaps.get(event_type, 0.0),
            stale=stale.get(event_type, 0.0),
            retries=retries.get(event_type, 0.0),
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            batch_avg=batch_sum.get(event_type, 0.0) / count if count else None,
        ))
    for labels, value in current.get("silvertine_dead_letters_total").items():
        as_dict = dict(labels)
        key = (as_dict.get("event_type", ""), as_dict.get("reason", ""))
        view.dead_letters[key] = view.dead_letters.get(key, 0.0) + value
    _handlers(view, current, previous, seconds)
    offsets = current.get("silvertine_clock_offset_seconds")
    if offsets:
        view.clock["offset_s"] = max(offsets.values(), key=abs)
        synced = current.get("silvertine_clock_synchronised")
        if synced:
            view.clock["synchronised"] = min(synced.values())
    view.lag = current.by_label("silvertine_lane_lag", "event_type")
    view.held = current.by_label("silvertine_reorder_held", "event_type")
    shed, shed_before = counter("silvertine_shed_events_total", "event_type")
    view.shed = {t: (v, rate(v, _get(shed_before, t), seconds)) for t, v in shed.items()}
    view.stages = _percentiles(current, previous, "silvertine_stage_latency_seconds", "stage")
    return view


def _handlers(view: MonitorView, current: Scrape, previous: Scrape | None,
              seconds: float | None) -> None:
    calls = current.by_label("silvertine_handler_calls_total", "handler")
    calls_before = (previous.by_label("silvertine_handler_calls_total", "handler")
                    if previous is not None else None)
    skipped = current.by_label("silvertine_handler_skipped_total", "handler")
    circuit = current.by_label("silvertine_circuit_open", "handler")
    failures: dict[str, dict[str, float]] = {}
    for labels, value in current.get("silvertine_handler_failures_total").items():
        as_dict = dict(labels)
        per_kind = failures.setdefault(as_dict.get("handler", ""), {})
        kind = as_dict.get("kind", "")
        per_kind[kind] = per_kind.get(kind, 0.0) + value
    for handler in sorted(set(calls) | set(failures) | set(circuit)):
        view.handlers.append(HandlerRow(
            handler=handler,
            calls=calls.get(handler, 0.0),
            call_rate=rate(calls.get(handler, 0.0), _get(calls_before, handler), seconds),
            failures=failures.get(handler, {}),
            skipped=skipped.get(handler, 0.0),
            circuit_open=circuit.get(handler, 0.0) > 0,
        ))


def _percentiles(current: Scrape, previous: Scrape | None, name: str,
                 label: str) -> dict[str, tuple[float | None, float | None]]:
    """p50/p99 in ms per label value, over the buckets filled since the previous scrape."""
    result: dict[str, tuple[float | None, float | None]] = {}
    before = previous.buckets(name, label) if previous is not None else {}
    for key, buckets in current.buckets(name, label).items():
        window = bucket_delta(buckets, before[key]) if key in before else list(buckets)
        if not window or window[-1][1] <= 0:
            window = list(buckets)  # nothing new since the last scrape: show the totals
        p50, p99 = histogram_quantile(0.5, window), histogram_quantile(0.99, window)
        result[key] = (p50 * 1000 if p50 is not None else None,
                       p99 * 1000 if p99 is not None else None)
    return result


def _get(values: dict[str, float] | None, key: str) -> float | None:
    if values is None:
        return None
    return values.get(key, 0.0)


# --- drawing ---------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _type_columns(view: MonitorView) -> tuple[list[str], list[list[str]]]:
    header = ["type", "in", "in/s", "logged", "logged/s", "dlq", "dedupe", "gaps", "stale",
              "retries", "sink p50 ms", "sink p99 ms", "batch avg"]
    rows = [[r.event_type, _num(r.events_in), _num(r.in_rate, 1), _num(r.logged),
             _num(r.logged_rate, 1), _num(r.dead_letters), _num(r.dedupe_hits), _num(r.gaps),
             _num(r.stale), _num(r.retries), _ms(r.latency_p50_ms), _ms(r.latency_p99_ms),
             _num(r.batch_avg, 1)] for r in view.types]
    return header, rows


def _handler_columns(view: MonitorView) -> tuple[list[str], list[list[str]]]:
    header = ["handler", "calls", "calls/s", "errors", "timeouts", "skipped", "circuit"]
    rows = [[h.handler, _num(h.calls), _num(h.call_rate, 1), _num(h.failures.get("error", 0.0)),
             _num(h.failures.get("timeout", 0.0)), _num(h.skipped),
             "OPEN" if h.circuit_open else "closed"] for h in view.handlers]
    return header, rows


def _table_text(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [title]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    return lines


def _clock_text(clock: dict[str, float]) -> str:
    text = f"offset {clock['offset_s'] * 1000:+.3f} ms"
    if "synchronised" in clock:
        text += ", synchronised" if clock["synchronised"] >= 1 else ", NOT synchronised"
    return text


def render_text(view: MonitorView) -> str:
    """Draw the view as plain text (for ``--once``, scripts and tests)."""
    lines = [f"silvertine monitor  {view.taken_at.isoformat(timespec='seconds')}  "
             f"rates over {_num(view.interval_s, 1)}s"]
    lines.extend(f"ERROR {error}" for error in view.errors)
    lines.append("")
    lines.extend(_table_text(f"events (sink latency over the {view.percentile_window})",
                             *_type_columns(view)))
    lines.append("")
    lines.append("dead letters by reason")
    if view.dead_letters:
        for (event_type, reason), count in sorted(view.dead_letters.items()):
            lines.append(f"  {event_type:12} {reason:20} {_num(count)}")
    else:
        lines.append("  none")
    if view.handlers:
        lines.append("")
        lines.extend(_table_text("handlers", *_handler_columns(view)))
    if view.clock:
        lines.append("")
        lines.append(f"clock: {_clock_text(view.clock)}")
    for title, values in (("consumer lag (messages)", view.lag),
                          ("held in reorder windows", view.held)):
        if values:
            lines.append("")
            lines.append(title)
            lines.extend(f"  {key:12} {_num(value)}" for key, value in sorted(values.items()))
    if view.shed:
        lines.append("")
        lines.append("shed events")
        lines.extend(f"  {t:12} {_num(total)}  {_num(r, 1)}/s"
                     for t, (total, r) in view.shed.items())
    if view.stages:
        lines.append("")
        lines.append(f"stage latency ms ({view.percentile_window})")
        lines.extend(f"  {stage:20} p50 {_ms(p50)}  p99 {_ms(p99)}"
                     for stage, (p50, p99) in sorted(view.stages.items()))
    return "\n".join(lines)


def render_rich(view: MonitorView) -> RenderableType:
    """Draw the view with rich tables (for the live dashboard)."""
    parts: list[RenderableType] = [Text(
        f"silvertine monitor  {view.taken_at.astimezone().strftime('%H:%M:%S')}  "
        f"rates over {_num(view.interval_s, 1)}s   (Ctrl-C quits)", style="bold")]
    parts.extend(Text(f"ERROR {error}", style="bold red") for error in view.errors)
    header, rows = _type_columns(view)
    table = Table(title=f"events (sink latency over the {view.percentile_window})",
                  box=box.SIMPLE_HEAD, title_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right", no_wrap=index == 0)
    for row, type_row in zip(rows, view.types, strict=True):
        style = "red" if type_row.retries or type_row.gaps else None
        table.add_row(*row, style=style)
    parts.append(table)
    dlq = Table(title="dead letters by reason", box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("type", "reason", "count"):
        dlq.add_column(name, justify="right" if name == "count" else "left")
    for (event_type, reason), count in sorted(view.dead_letters.items()):
        dlq.add_row(event_type, reason, _num(count))
    parts.append(dlq)
    if view.handlers:
        header, rows = _handler_columns(view)
        handlers = Table(title="handlers", box=box.SIMPLE_HEAD, title_justify="left")
        for index, name in enumerate(header):
            handlers.add_column(name, justify="left" if index == 0 else "right")
        for row, handler_row in zip(rows, view.handlers, strict=True):
            handlers.add_row(*row, style="bold red" if handler_row.circuit_open else None)
        parts.append(handlers)
    extras = []
    if view.clock:
        extras.append(f"clock: {_clock_text(view.clock)}")
    if view.lag:
        extras.append("consumer lag: " + ", ".join(f"{k} {v:,.0f}"
                                                   for k, v in sorted(view.lag.items())))
    if view.held:
        extras.append("held in reorder windows: " + ", ".join(
            f"{k} {v:,.0f}" for k, v in sorted(view.held.items())))
    if view.shed:
        extras.append("shed: " + ", ".join(f"{t} {_num(total)} ({_num(r, 1)}/s)"
                                           for t, (total, r) in view.shed.items()))
    if view.stages:
        extras.append("stages: " + ", ".join(f"{s} p50 {_ms(a)} p99 {_ms(b)} ms"
                                             for s, (a, b) in sorted(view.stages.items())))
    parts.extend(Text(line) for line in extras)
    return Group(*parts)


# --- the loop --------------------------------------------------------------------


def fetch_metrics(url: str, timeout_s: float = 2.0) -> str:
    """Read one ``/metrics`` endpoint.

    Raises:
        OSError: the endpoint did not answer (``urllib.error.URLError`` is one).
    """
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return str(response.read().decode("utf-8"))


def scrape_all(urls: Iterable[str], fetch: Callable[[str], str] = fetch_metrics,
               clock: Callable[[], float] = time.monotonic) -> tuple[Scrape | None, list[str]]:
    """Read every endpoint; return the merged scrape (None if none answered) and the errors."""
    scrapes: list[Scrape] = []
    errors: list[str] = []
    for url in urls:
        try:
            scrapes.append(parse_metrics(fetch(url), clock()))
        except (OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
    return (merge_scrapes(scrapes) if scrapes else None), errors


def run_monitor(urls: Sequence[str], interval_s: float = 1.0, once: bool = False,
                console: Console | None = None,
                fetch: Callable[[str], str] = fetch_metrics) -> int:
    """Show the dashboard until Ctrl-C (or one snapshot with ``once``); return an exit code.

    With ``once`` the rates come from two scrapes ``interval_s`` apart (no
    rates when ``interval_s`` is 0); the exit code is 1 when no endpoint answered.
    """
    console = console or Console()
    if once:
        first, errors = scrape_all(urls, fetch)
        previous = None
        if first is not None and interval_s > 0:
            time.sleep(interval_s)
            previous = first
            first, errors = scrape_all(urls, fetch)
        if first is None:
            console.print("\n".join(f"ERROR {e}" for e in errors), markup=False,
                          highlight=False, soft_wrap=True)
            return 1
        view = build_view(first, previous)
        view.errors = errors
        console.print(render_text(view), markup=False, highlight=False, soft_wrap=True)
        return 0
    previous = None
    with Live(Text("reading metrics…"), console=console, refresh_per_second=4,
              transient=False) as live:
        try:
            while True:
                current, errors = scrape_all(urls, fetch)
                if current is None:
                    live.update(Text("\n".join(f"ERROR {e}" for e in errors), style="bold red"))
                else:
                    view = build_view(current, previous)
                    view.errors = errors
                    live.update(render_rich(view))
                    previous = current
                time.sleep(interval_s)
        except KeyboardInterrupt:
            return 0
