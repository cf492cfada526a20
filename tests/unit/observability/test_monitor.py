"""The monitor's pure parts: parsing, rates, percentiles, merging, the text view."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from silvertine_streams.observability.monitor import (
    bucket_delta,
    build_view,
    histogram_quantile,
    merge_scrapes,
    parse_metrics,
    rate,
    render_text,
    run_monitor,
)

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0)


class Worker:
    """A registry shaped like a worker's, driven by the test."""

    def __init__(self, with_extras: bool = False) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("silvertine_events_in", "", ["event_type"], registry=r)
        self.logged = Counter("silvertine_events_logged", "", ["event_type"], registry=r)
        self.dead = Counter("silvertine_dead_letters", "", ["event_type", "reason"], registry=r)
        self.dedupe = Counter("silvertine_dedupe_hits", "", ["event_type"], registry=r)
        self.gaps = Counter("silvertine_sequence_gaps", "", ["event_type"], registry=r)
        self.latency = Histogram("silvertine_sink_latency_seconds", "", ["event_type"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("silvertine_sink_batch_size", "", ["event_type"],
                               buckets=(1, 10, 100, 1000), registry=r)
        self.calls = Counter("silvertine_handler_calls", "", ["handler"], registry=r)
        self.failures = Counter("silvertine_handler_failures", "", ["handler", "kind"],
                                registry=r)
        self.circuit = Gauge("silvertine_circuit_open", "", ["handler"], registry=r)
        Counter("unrelated_total", "", registry=r).inc(5)
        if with_extras:
            self.clock = Gauge("silvertine_clock_offset_seconds", "", registry=r)
            self.synced = Gauge("silvertine_clock_synchronised", "", registry=r)
            self.shed = Counter("silvertine_shed_events", "", ["event_type", "reason"],
                                registry=r)
            self.lag = Gauge("silvertine_lane_lag", "", ["event_type"], registry=r)
            self.stage = Histogram("silvertine_stage_latency_seconds", "",
                                   ["event_type", "stage"], buckets=LATENCY_BUCKETS,
                                   registry=r)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_parse_keeps_silvertine_samples_with_their_labels() -> None:
    worker = Worker()
    worker.events_in.labels("order").inc(7)
    worker.latency.labels("order").observe(0.004)

    scrape = parse_metrics(worker.text(), taken_at=5.0)

    assert scrape.by_label("silvertine_events_in_total", "event_type") == {"order": 7.0}
    assert "unrelated_total" not in scrape.samples
    assert not any(name.endswith("_created") for name in scrape.samples)
    buckets = scrape.buckets("silvertine_sink_latency_seconds", "event_type")["order"]
    assert buckets[-1] == (float("inf"), 1.0)
    assert (0.005, 1.0) in buckets and (0.001, 0.0) in buckets


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.2, 30.0), (0.4, 40.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)  # rank 10: top of bucket 1
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: half of bucket 2
    assert histogram_quantile(1.0, buckets) == pytest.approx(0.4)
    assert histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)]) == 1.0  # in +Inf
    assert histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_bucket_delta_and_rate_handle_worker_restarts() -> None:
    before = [(1.0, 5.0), (float("inf"), 8.0)]
    assert bucket_delta([(1.0, 7.0), (float("inf"), 12.0)], before) == [
        (1.0, 2.0), (float("inf"), 4.0)]
    restarted = [(1.0, 1.0), (float("inf"), 1.0)]
    assert bucket_delta(restarted, before) == restarted
    assert rate(150.0, 100.0, 2.0) == 25.0
    assert rate(30.0, 100.0, 2.0) == 15.0  # a reset counts from zero
    assert rate(30.0, None, 2.0) is None


def test_view_rates_come_from_the_delta_between_scrapes() -> None:
    worker = Worker()
    worker.events_in.labels("market_data").inc(1000)
    worker.logged.labels("market_data").inc(990)
    worker.latency.labels("market_data").observe(0.5)  # a slow start, before the window
    first = parse_metrics(worker.text(), taken_at=10.0)
    worker.events_in.labels("market_data").inc(500)
    worker.logged.labels("market_data").inc(400)
    worker.dead.labels("market_data", "invalid").inc(3)
    for _ in range(99):
        worker.latency.labels("market_data").observe(0.003)
    worker.latency.labels("market_data").observe(0.05)
    worker.batch.labels("market_data").observe(500)
    worker.batch.labels("market_data").observe(100)
    second = parse_metrics(worker.text(), taken_at=12.0)

    view = build_view(second, first)

    (row,) = view.types
    assert (row.event_type, row.events_in, row.logged) == ("market_data", 1500.0, 1390.0)
    assert row.in_rate == pytest.approx(250.0)
    assert row.logged_rate == pytest.approx(200.0)
    assert row.dead_letters == 3.0
    assert row.batch_avg == pytest.approx(300.0)
    # p50 of the window lies in the (1 ms, 5 ms] bucket; the 0.5 s outlier is outside it.
    assert row.latency_p50_ms is not None and 1.0 < row.latency_p50_ms <= 5.0
    assert row.latency_p99_ms is not None and row.latency_p99_ms <= 10.0
    assert view.dead_letters == {("market_data", "invalid"): 3.0}
    assert view.interval_s == pytest.approx(2.0)


def test_first_view_has_totals_and_no_rates() -> None:
    worker = Worker()
    worker.events_in.labels("order").inc(4)
    view = build_view(parse_metrics(worker.text(), taken_at=1.0))
    assert view.types[0].in_rate is None
    assert "since start" in render_text(view)


def test_handlers_failures_and_circuits() -> None:
    worker = Worker()
    worker.calls.labels("risk").inc(10)
    worker.failures.labels("risk", "error").inc(2)
    worker.failures.labels("risk", "timeout").inc(1)
    worker.circuit.labels("risk").set(1)
    worker.calls.labels("audit").inc(5)
    worker.circuit.labels("audit").set(0)

    view = build_view(parse_metrics(worker.text()))

    by_name = {h.handler: h for h in view.handlers}
    assert by_name["risk"].failures == {"error": 2.0, "timeout": 1.0}
    assert by_name["risk"].circuit_open and not by_name["audit"].circuit_open
    text = render_text(view)
    assert "OPEN" in text and "closed" in text


def test_optional_metrics_show_up_when_present() -> None:
    worker = Worker(with_extras=True)
    worker.clock.set(0.0021)
    worker.synced.set(1)
    worker.shed.labels("market_data", "conflated").inc(40)
    worker.shed.labels("market_data", "dropped").inc(2)
    worker.lag.labels("market_data").set(1234)
    worker.stage.labels("order", "end_to_end").observe(0.004)
    worker.stage.labels("fill", "end_to_end").observe(0.004)
    view = build_view(parse_metrics(worker.text()))
    text = render_text(view)
    assert "clock: offset +2.100 ms, synchronised" in text
    assert view.shed == {"market_data": (42.0, None)}
    assert "consumer lag (messages)" in text and "1,234" in text
    p50, _ = view.stages["end_to_end"]
    assert p50 is not None and 1.0 < p50 <= 5.0
    plain = render_text(build_view(parse_metrics(Worker().text())))
    assert "clock" not in plain and "shed events" not in plain


def test_several_workers_add_up_and_gauges_take_the_max() -> None:
    a, b = Worker(), Worker()
    a.events_in.labels("fill").inc(3)
    b.events_in.labels("fill").inc(4)
    a.circuit.labels("risk").set(0)
    b.circuit.labels("risk").set(1)
    merged = merge_scrapes([parse_metrics(a.text(), 1.0), parse_metrics(b.text(), 2.0)])
    assert merged.by_label("silvertine_events_in_total", "event_type") == {"fill": 7.0}
    assert merged.by_label("silvertine_circuit_open", "handler") == {"risk": 1.0}
    assert merged.taken_at == 2.0


def test_text_table_lists_every_type_with_its_counts() -> None:
    worker = Worker()
    for event_type, count in (("market_data", 1200), ("order", 30)):
        worker.events_in.labels(event_type).inc(count)
        worker.logged.labels(event_type).inc(count)
    lines = render_text(build_view(parse_metrics(worker.text()))).splitlines()
    header = next(line for line in lines if line.strip().startswith("type"))
    assert "logged/s" in header and "sink p50 ms" in header and "sink p99 ms" in header
    row = next(line for line in lines if line.strip().startswith("market_data"))
    assert row.split()[1:2] == ["1,200"]


def test_once_with_an_unreachable_endpoint_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(url: str) -> str:
        raise OSError("connection refused")

    from rich.console import Console

    assert run_monitor(["http://127.0.0.1:9/metrics"], once=True, interval_s=0,
                       console=Console(), fetch=refuse) == 1
    assert "connection refused" in capsys.readouterr().out
