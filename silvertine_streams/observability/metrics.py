"""Prometheus metrics, all prefixed ``silvertine_``, served on loopback.

Counters are incremented once per batch (``inc(n)``), never once per event, and
label children are cached per event type: ``labels()`` costs about a
microsecond, which the hot path cannot pay per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from silvertine_streams.handlers import DispatchReport

REGISTRY = CollectorRegistry(auto_describe=True)
"""Our own registry: tests and embedded use never collide with the global one."""

EVENTS_IN = Counter(
    "silvertine_events_in", "Events decoded from Kafka", ["event_type"], registry=REGISTRY
)
EVENTS_LOGGED = Counter(
    "silvertine_events_logged", "Events written to the canonical log", ["event_type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "silvertine_dead_letters", "Events sent to the DLQ", ["event_type", "reason"],
    registry=REGISTRY,
)
DEDUPE_HITS = Counter(
    "silvertine_dedupe_hits", "Events dropped as already logged (same id, same content)",
    ["event_type"], registry=REGISTRY,
)
BUSINESS_DUPLICATES = Counter(
    "silvertine_business_duplicates",
    "Events not logged because their business key (a fill's venue and trade id) was "
    "already logged under another event id; each is also a duplicate_trade dead letter",
    ["event_type"], registry=REGISTRY,
)
SEQUENCE_GAPS = Counter(
    "silvertine_sequence_gaps", "Sequence gaps detected", ["event_type"], registry=REGISTRY
)
SEQUENCE_STALE = Counter(
    "silvertine_sequence_stale", "Events at or below their stream's high-water mark",
    ["event_type"], registry=REGISTRY,
)
SINK_BATCH_SIZE = Histogram(
    "silvertine_sink_batch_size", "Events per canonical-log write", ["event_type"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 5000), registry=REGISTRY,
)
SINK_LATENCY = Histogram(
    "silvertine_sink_latency_seconds", "Canonical-log write latency", ["event_type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
    registry=REGISTRY,
)
SHED_EVENTS = Counter(
    "silvertine_shed_events", "Events shed under overload, by reason (never silently)",
    ["event_type", "reason"], registry=REGISTRY,
)
STAGE_LATENCY = Histogram(
    "silvertine_stage_latency_seconds",
    "Latency per stage: to_topic (ts_ns to Kafka), to_agent (Kafka to agent), "
    "to_log (agent to durable log), end_to_end (ts_ns to durable log); one sample per message",
    ["event_type", "stage"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)
REORDER_HELD = Gauge(
    "silvertine_reorder_held", "Events held in reorder windows", ["event_type"],
    registry=REGISTRY,
)
LANE_LAG = Gauge(
    "silvertine_lane_lag", "Consumer lag (messages) of the last message, per event type",
    ["event_type"], registry=REGISTRY,
)
LANE_PAUSES = Counter(
    "silvertine_lane_pauses", "Times lower lanes were paused for critical work",
    registry=REGISTRY,
)
OFFSET_HOLES = Counter(
    "silvertine_offset_holes", "Messages delivered before their predecessors (consumer restarted)",
    registry=REGISTRY,
)
MEMORY_THROTTLED = Counter(
    "silvertine_memory_throttled", "Messages delayed because the worker neared its RSS limit",
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "silvertine_worker_restarts",
    "Times `silvertine worker` restarted this worker after a crash (set at start)",
    registry=REGISTRY,
)
CLOCK_OFFSET = Gauge(
    "silvertine_clock_offset_seconds", "NTP offset (server - local)", registry=REGISTRY
)
CLOCK_SYNCHRONISED = Gauge(
    "silvertine_clock_synchronised", "1 while the clock is synchronised, 0 otherwise",
    registry=REGISTRY,
)
HANDLER_CALLS = Counter(
    "silvertine_handler_calls", "Handler invocations", ["handler"], registry=REGISTRY
)
HANDLER_FAILURES = Counter(
    "silvertine_handler_failures", "Handler calls that raised or timed out",
    ["handler", "kind"], registry=REGISTRY,
)
HANDLER_SKIPPED = Counter(
    "silvertine_handler_skipped", "Handler calls skipped by an open circuit", ["handler"],
    registry=REGISTRY,
)
CIRCUIT_OPEN = Gauge(
    "silvertine_circuit_open", "1 while a handler's circuit is open", ["handler"],
    registry=REGISTRY,
)
HANDLER_ALREADY_DONE = Counter(
    "silvertine_handler_already_done",
    "Redelivered events an idempotent handler had completed, so was not given again",
    ["handler"], registry=REGISTRY,
)
HANDLER_LAG = Gauge(
    "silvertine_handler_lag",
    "Canonical-log entries a handler group has not finished yet (XLEN - finished)",
    ["group", "event_type"], registry=REGISTRY,
)
HANDLER_EVENTS = Counter(
    "silvertine_handler_events",
    "Canonical-log entries a handler group finished in this worker (handled, cursor past them)",
    ["group", "event_type"], registry=REGISTRY,
)
HANDLER_GROUP_HELD = Gauge(
    "silvertine_handler_group_held", "1 while this worker runs the app's handler group",
    ["group"], registry=REGISTRY,
)

# --- retention and bounds (issue #14) ---------------------------------------------------
LOG_TRIMMED = Counter(
    "silvertine_log_trimmed",
    "Canonical-log entries removed by retention (SILVERTINE_LOG_RETENTION / _LOG_MAX_ENTRIES)",
    ["event_type"], registry=REGISTRY,
)
LOG_RETENTION_HELD = Gauge(
    "silvertine_log_retention_held",
    "1 while a reader (handler group or consumer group) keeps log entries retention would trim",
    ["event_type"], registry=REGISTRY,
)
LOG_LENGTH = Gauge(
    "silvertine_log_entries", "Entries in the canonical log (XLEN), sampled by retention",
    ["event_type"], registry=REGISTRY,
)
DLQ_TRIMMED = Counter(
    "silvertine_dlq_trimmed",
    "Dead letters removed from the Redis dlq stream by its bound (SILVERTINE_DLQ_MAX_LEN); "
    "their Kafka copies stay in silvertine.dlq",
    registry=REGISTRY,
)
DEDUPE_INDEX_ENTRIES = Gauge(
    "silvertine_dedupe_index_entries",
    "Ids (and business keys) in the log's dedupe index, all live buckets, sampled",
    ["event_type"], registry=REGISTRY,
)
DEDUPE_INDEX_BYTES = Gauge(
    "silvertine_dedupe_index_bytes",
    "Redis memory of the log's dedupe index (MEMORY USAGE, sampled), all live buckets",
    ["event_type"], registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class TypeMetrics:
    """The metrics of one event type's pipeline: label children resolved once.

    The pipeline is given one of these; it touches no module-level metric itself.
    """

    event_type: str

    events_in: Counter
    events_logged: Counter
    dedupe_hits: Counter
    business_duplicates: Counter
    sequence_gaps: Counter
    sequence_stale: Counter
    sink_batch_size: Histogram
    sink_latency: Histogram
    to_topic: Histogram
    to_agent: Histogram
    to_log: Histogram
    end_to_end: Histogram
    reorder_held: Gauge
    lag: Gauge

    @classmethod
    def for_type(cls, event_type: str) -> TypeMetrics:
        """Resolve every per-type child for ``event_type``."""
        return cls(
            event_type=event_type,
            events_in=EVENTS_IN.labels(event_type),
            events_logged=EVENTS_LOGGED.labels(event_type),
            dedupe_hits=DEDUPE_HITS.labels(event_type),
            business_duplicates=BUSINESS_DUPLICATES.labels(event_type),
            sequence_gaps=SEQUENCE_GAPS.labels(event_type),
            sequence_stale=SEQUENCE_STALE.labels(event_type),
            sink_batch_size=SINK_BATCH_SIZE.labels(event_type),
            sink_latency=SINK_LATENCY.labels(event_type),
            to_topic=STAGE_LATENCY.labels(event_type, "to_topic"),
            to_agent=STAGE_LATENCY.labels(event_type, "to_agent"),
            to_log=STAGE_LATENCY.labels(event_type, "to_log"),
            end_to_end=STAGE_LATENCY.labels(event_type, "end_to_end"),
            reorder_held=REORDER_HELD.labels(event_type),
            lag=LANE_LAG.labels(event_type),
        )

    def observe_stages(
        self, ts_ns: int, kafka_s: float | None, agent_s: float, logged_s: float
    ) -> None:
        """Record one message's stage latencies (clock skew clamps to 0)."""
        created_s = ts_ns / 1e9
        if kafka_s is not None:
            self.to_topic.observe(max(0.0, kafka_s - created_s))
            self.to_agent.observe(max(0.0, agent_s - kafka_s))
        self.to_log.observe(max(0.0, logged_s - agent_s))
        self.end_to_end.observe(max(0.0, logged_s - created_s))

    def count_dead_letters(self, reasons: Iterable[str]) -> None:
        """Count dead letters by their reason's code (``invalid: …`` counts as ``invalid``)."""
        for reason in reasons:
            DEAD_LETTERS.labels(self.event_type, reason.split(":", 1)[0]).inc()

    def count_shed(self, reason: str) -> None:
        """Count one event shed under overload, by reason."""
        SHED_EVENTS.labels(self.event_type, reason).inc()

    def record_dispatch(self, report: DispatchReport) -> None:
        """Add one handler dispatch's counts to the handler metrics."""
        record_dispatch(report)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread (port 0 = off)."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)


def record_dispatch(report: DispatchReport) -> None:
    """Add one handler dispatch's per-handler counts to the handler metrics."""
    for stats in report.handlers.values():
        HANDLER_CALLS.labels(stats.name).inc(stats.calls)
        if stats.failures:
            HANDLER_FAILURES.labels(stats.name, "error").inc(stats.failures)
        if stats.timeouts:
            HANDLER_FAILURES.labels(stats.name, "timeout").inc(stats.timeouts)
        if stats.skipped_open:
            HANDLER_SKIPPED.labels(stats.name).inc(stats.skipped_open)
        if stats.skipped_done:
            HANDLER_ALREADY_DONE.labels(stats.name).inc(stats.skipped_done)


class RetryingSink(Protocol):
    """What the retry collector reads of a sink."""

    event_type: str
    retries: int


class SinkRetries(Collector):
    """``silvertine_sink_retries_total{event_type}``, read live from the sinks.

    A sink blocked by a Redis outage counts its retries while it waits; a
    counter incremented after the write returned would stay flat exactly when
    an operator needs to see it move.
    """

    def __init__(self, sinks: Iterable[RetryingSink]) -> None:
        self._sinks = list(sinks)

    def collect(self) -> Iterator[Metric]:
        """Yield one sample per sink."""
        family = CounterMetricFamily(
            "silvertine_sink_retries", "Canonical-log write retries (Redis unavailable)",
            labels=["event_type"],
        )
        for sink in self._sinks:
            family.add_metric([sink.event_type], sink.retries)
        yield family


def register_sink_retries(sinks: Iterable[RetryingSink]) -> None:
    """Expose the retry counts of ``sinks`` (once per process; later calls replace it)."""
    global _sink_retries
    if _sink_retries is not None:
        REGISTRY.unregister(_sink_retries)
    _sink_retries = SinkRetries(sinks)
    REGISTRY.register(_sink_retries)


_sink_retries: SinkRetries | None = None
