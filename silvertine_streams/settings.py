"""One frozen settings object, read once from ``SILVERTINE_*`` environment variables.

No other module reads ``os.environ``: build :class:`Settings` with
:func:`load_settings` at the edge (CLI, app factory, test fixture) and pass it
down. A bad value raises :class:`~silvertine_streams.errors.ConfigError` naming
the variable and what it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from silvertine_streams.errors import ConfigError

ENV_PREFIX = "SILVERTINE_"

_KAFKA_URL = re.compile(r"^kafka://[A-Za-z0-9_.\-\[\]:]+:\d{1,5}(;[A-Za-z0-9_.\-\[\]:]+:\d{1,5})*$")
_REDIS_URL = re.compile(r"^rediss?://([^@/]*@)?[A-Za-z0-9_.\-\[\]:]+(:\d{1,5})?(/\d+)?$")

_EVENT_TYPES = ("market_data", "order", "fill", "signal", "system")

OverflowPolicy = Literal["block", "conflate", "drop_oldest", "drop_newest"]
SequencePolicy = Literal["strict", "best_effort"]


class Settings(BaseSettings):
    """Every setting of silvertine-streams; see the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False
    )

    # --- servers -----------------------------------------------------------
    kafka_url: str | None = Field(
        default=None,
        description="kafka://host:port[;host:port...]; unset = the embedded Tansu broker",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://[user:pass@]host:port/db or rediss://...; unset = embedded redis",
    )
    data_dir: Path = Field(
        default=Path(".silvertine"),
        description="where the embedded stack keeps PID files, logs, Redis AOF and tables",
    )
    kafka_port: int = Field(default=0, ge=0, le=65535, description="embedded broker port, 0 = free")
    redis_port: int = Field(default=0, ge=0, le=65535, description="embedded redis port, 0 = free")

    # --- the Faust app -----------------------------------------------------
    app_id: str = Field(default="silvertine", min_length=1, description="consumer group / app id")
    partitions: int = Field(default=4, ge=1, le=1024, description="partitions per event topic")
    replication_factor: int = Field(default=1, ge=1, le=16, description="topic replication")
    table_store: str = Field(
        default="memory://", description="Faust table store: memory:// or rocksdb://"
    )
    web_host: str = Field(default="127.0.0.1", description="Faust web server bind address")
    web_port: int = Field(default=6066, ge=0, le=65535, description="Faust web server port")
    fetch_wait_ms: int = Field(
        default=10, ge=1, le=10_000, description="consumer fetch max wait (Faust hard-codes 1500)"
    )
    rebalance_timeout_s: float = Field(
        default=2.0, gt=0, le=600, description="consumer group rebalance timeout"
    )
    session_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="consumer group session timeout"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- observability -----------------------------------------------------
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Prometheus /metrics port on loopback, 0 = off"
    )

    metrics_host: str = Field(
        default="127.0.0.1", description="metrics bind address (0.0.0.0 only inside containers)"
    )

    # --- the pipeline ------------------------------------------------------
    envelope_max_events: int = Field(
        default=500, ge=1, le=100_000, description="events per batch envelope"
    )
    dedupe_window_s: float = Field(
        default=86_400.0, gt=0, description="seconds, at least, a logged event id is deduplicated"
    )
    handler_timeout_s: float = Field(default=1.0, gt=0, description="per-handler call timeout")
    circuit_failure_threshold: int = Field(
        default=5, ge=1, description="consecutive handler failures that open its circuit"
    )
    circuit_reset_s: float = Field(
        default=10.0, gt=0, description="seconds an open circuit waits before a trial call"
    )
    handlers: str = Field(
        default="",
        description="comma-separated module:function run at worker start with the handler "
        "registry, to subscribe handlers",
    )
    overlap_writes: bool = Field(
        default=False,
        description="bulk lanes decode the next message while the previous log write is in "
        "flight (off: no gain measured where the worker shares 2 cores with Redis and Kafka)",
    )
    sink_retry_max_s: float = Field(
        default=2.0, gt=0, description="longest backoff between canonical-log write retries"
    )

    # --- ordering, lanes, flow control ----------------------------------------
    sequence_policies: str = Field(
        default="",
        description="per-type reorder policy overrides, e.g. market_data=strict "
        "(defaults: order/fill strict, others best_effort)",
    )
    reorder_wait_strict_s: float = Field(
        default=2.0, gt=0, description="how long a strict stream holds events for a missing one"
    )
    reorder_wait_best_effort_s: float = Field(
        default=0.05, gt=0, description="how long a best-effort stream holds events"
    )
    reorder_max_held: int = Field(
        default=1000, ge=1, description="held out-of-order events per stream before release"
    )
    lanes: str = Field(
        default="",
        description="per-type lane overrides, e.g. market_data=low,signal=critical "
        "(defaults: order/fill critical, signal/system high, market_data normal)",
    )
    event_types: str = Field(
        default="",
        description="comma-separated event types this worker consumes and mirrors (empty: "
        "all). Run order,fill in a worker group of their own (another SILVERTINE_APP_ID) "
        "so market data never shares their process",
    )
    lane_max_pause_s: float = Field(
        default=0.05, gt=0, description="longest stretch a lower lane is paused for critical work"
    )
    overflow_policies: str = Field(
        default="",
        description="per-type overload policy overrides (block, conflate, drop_oldest, "
        "drop_newest); order and fill always block. Default market_data=conflate",
    )
    overload_high_lag: int = Field(
        default=1000, ge=1, description="consumer lag (messages) at which a type is overloaded"
    )
    overload_low_lag: int = Field(
        default=200, ge=0, description="consumer lag below which the overload ends"
    )
    overload_keep_per_batch: int = Field(
        default=100, ge=0, description="events a drop_* policy keeps per message under overload"
    )
    memory_limit_mb: int = Field(
        default=0, ge=0, description="worker RSS limit; intake pauses near it (0 = off)"
    )
    publish_max_lag: int = Field(
        default=10_000, ge=0, description="engine lag above which Publisher waits (0 = off)"
    )
    publish_max_backlog: int = Field(
        default=100_000, ge=0,
        description="Redis ingress backlog above which Publisher waits (0 = off)",
    )

    # --- time -------------------------------------------------------------------
    clock_servers: str = Field(
        default="", description="comma-separated NTP host[:port]; empty = clock sync off"
    )
    clock_interval_s: float = Field(default=64.0, gt=0, description="seconds between NTP rounds")
    clock_timeout_s: float = Field(default=2.0, gt=0, description="NTP reply timeout")
    clock_max_offset_ms: float = Field(
        default=100.0, gt=0, description="clock offset that raises clock_drift"
    )
    clock_stale_after_s: float = Field(
        default=300.0, gt=0, description="seconds without an NTP reply before unsynchronised"
    )
    timestamp_future_tolerance_s: float = Field(
        default=5.0, ge=0, description="how far in the future an event timestamp may be"
    )
    timestamp_floor: datetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="event timestamps before this go to the DLQ (ISO-8601 with timezone)",
    )

    @field_validator("kafka_url")
    @classmethod
    def _check_kafka_url(cls, value: str | None) -> str | None:
        if value is not None and not _KAFKA_URL.match(value):
            raise ValueError("kafka://host:port[;host:port...]")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not _REDIS_URL.match(value):
            raise ValueError("redis://[user:pass@]host:port/db or rediss://...")
        return value

    @field_validator("timestamp_floor")
    @classmethod
    def _check_floor(cls, value: datetime) -> datetime:
        if value.utcoffset() is None:
            raise ValueError("an ISO-8601 time with a timezone, e.g. 2000-01-01T00:00:00Z")
        return value

    @field_validator("sequence_policies", "lanes", "overflow_policies")
    @classmethod
    def _check_type_map(cls, value: str) -> str:
        for entry in comma_list(value):
            event_type, sep, choice = entry.partition("=")
            if not sep or event_type.strip() not in _EVENT_TYPES or not choice.strip():
                raise ValueError(f"type=value entries with a type of {', '.join(_EVENT_TYPES)}")
        return value

    @field_validator("event_types")
    @classmethod
    def _check_event_types(cls, value: str) -> str:
        for name in comma_list(value):
            if name not in _EVENT_TYPES:
                raise ValueError(f"comma-separated types of {', '.join(_EVENT_TYPES)}")
        return value

    @field_validator("table_store")
    @classmethod
    def _check_table_store(cls, value: str) -> str:
        # Faust's RocksDB store is rocksdb:// (backed by rocksdict); rocksdict:// fails.
        if value not in ("memory://", "rocksdb://"):
            raise ValueError("memory:// or rocksdb://")
        return value

    def __repr_args__(self):  # type: ignore[no-untyped-def]  # pydantic's own signature
        """Hide passwords in URLs when settings are printed or logged."""
        for name, value in super().__repr_args__():
            if name in ("kafka_url", "redis_url") and isinstance(value, str):
                value = re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", value)
            yield name, value

    @property
    def consumed_types(self) -> tuple[str, ...]:
        """The event types this worker runs agents and ingress mirrors for, in EVENT_TYPES order."""
        chosen = set(comma_list(self.event_types))
        return tuple(t for t in _EVENT_TYPES if not chosen or t in chosen)

    @property
    def kafka_bootstrap(self) -> list[str]:
        """Return ``host:port`` strings for aiokafka, from :attr:`kafka_url`."""
        if self.kafka_url is None:
            raise ConfigError(f"{ENV_PREFIX}KAFKA_URL", None, "a URL (the stack is not up)")
        return self.kafka_url.removeprefix("kafka://").split(";")


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings` from ``SILVERTINE_*`` environment variables plus overrides.

    Overrides (keyword arguments named like the fields) win over the environment.

    Raises:
        ConfigError: naming the first bad variable and what it accepts.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # pydantic validates them
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        raise ConfigError(
            f"{ENV_PREFIX}{field.upper()}", error.get("input"), _accepted(field, error)
        ) from exc


def _accepted(field: str, error: Mapping[str, object]) -> str:
    """Describe, for a person, what ``field`` accepts."""
    reason = str(error.get("msg", "")).removeprefix("Value error, ")
    info = Settings.model_fields.get(field)
    if info is None:
        return reason
    bounds = [
        f"{op} {getattr(meta, attr)}"
        for meta in info.metadata
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if getattr(meta, attr, None) is not None
    ]
    kind = getattr(info.annotation, "__name__", str(info.annotation))
    accepted = f"{kind} {' and '.join(bounds)}".strip()
    description = f": {info.description}" if info.description else ""
    return f"{accepted}{description} ({reason})"


def comma_list(spec: str) -> list[str]:
    """The non-empty, stripped entries of a comma-separated setting."""
    return [part for part in (raw.strip() for raw in spec.split(",")) if part]


def type_map(spec: str) -> dict[str, str]:
    """Parse a ``type=value,type=value`` setting (already validated) into a dict."""
    pairs = (entry.partition("=") for entry in comma_list(spec))
    return {key.strip(): value.strip() for key, _, value in pairs}


def settings_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """Return ``base`` without ``SILVERTINE_*`` plus variables that reproduce ``settings``.

    For starting a worker process with exactly these settings.
    """
    env = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env
