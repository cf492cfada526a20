"""One frozen settings object, read once from ``SILVERTINE_*`` variables and a config file.

No other module reads ``os.environ``: build :class:`Settings` with
:func:`load_settings` at the edge (CLI, app factory, test fixture) and pass it
down. A bad value raises :class:`~silvertine_streams.errors.ConfigError` naming
the variable (or the config file's key and the file) and what it accepts.

The config file (``--config PATH`` or ``SILVERTINE_CONFIG``, shipped as
``config/event_engine.yaml``) is a pydantic-settings source
(:mod:`silvertine_streams.configfile`) below the environment: a ``SILVERTINE_*``
variable wins over the file, which wins over the defaults.

Comma-separated settings (``SILVERTINE_LANES=market_data=low,signal=critical``,
``SILVERTINE_HANDLERS=a:b,c:d``, ...) are parsed here into dicts and tuples, so a
bad one fails when the settings load, before any server is contacted;
:func:`settings_env` writes them back in the same syntax for a child process.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar, get_args

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from silvertine_streams.configfile import FIELD_KEYS, ConfigFileSource
from silvertine_streams.domain.flow import CRITICAL_TYPES
from silvertine_streams.domain.retention import format_duration, parse_duration
from silvertine_streams.errors import ConfigError, ConfigFileError, UnknownSetting
from silvertine_streams.events import EventPriority
from silvertine_streams.observability.ntp import parse_server
from silvertine_streams.security import MASK, parse_redis_url, read_secret_file, redact_url

ENV_PREFIX = "SILVERTINE_"

FAUST_ENV_PREFIX = "SILVERTINE_FAUST_"
"""Faust lets env vars like ``BROKER_URL`` override its keyword arguments; with
this prefix a stray variable in a user's shell cannot redirect the worker, and
``SILVERTINE_FAUST_*`` variables are Faust's own, not ours to check."""

SUPERVISOR_VARIABLES: Final = frozenset({"SILVERTINE_READY_FILE", "SILVERTINE_RESTARTS"})
"""Set by ``silvertine worker``'s supervisor for its child; not user settings."""

CONFIG_VARIABLE: Final = "SILVERTINE_CONFIG"
"""Names the config file when ``--config`` does not; not a setting itself."""

_CONFIG_SOURCE: ContextVar[ConfigFileSource | None] = ContextVar("_CONFIG_SOURCE", default=None)
"""The config file :func:`load_settings` is building settings with (none: no file)."""

_KAFKA_URL = re.compile(r"^kafka://[A-Za-z0-9_.\-\[\]:]+:\d{1,5}(;[A-Za-z0-9_.\-\[\]:]+:\d{1,5})*$")

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

SECRET_FILES: Final = {
    "kafka_sasl_password": "kafka_sasl_password_file",
    "kafka_ssl_key_password": "kafka_ssl_key_password_file",
    "redis_password": "redis_password_file",
}
"""Secret settings, and the setting naming a file to read each from (container secrets)."""
_URL_FIELDS: Final = ("kafka_url", "redis_url")
_PEM_FIELDS: Final = (
    "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
    "redis_ssl_cafile", "redis_ssl_certfile", "redis_ssl_keyfile",
)

_EVENT_TYPES = ("market_data", "order", "fill", "signal", "system")
_TYPES_TEXT: Final = ", ".join(_EVENT_TYPES)

OverflowPolicy = Literal["block", "conflate", "drop_oldest", "drop_newest"]
SequencePolicy = Literal["strict", "best_effort"]

_V = TypeVar("_V")
_N = TypeVar("_N", int, float)
_HANDLER = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def _entries(value: object, what: str) -> list[str]:
    """The stripped, non-empty entries of a comma-separated string or a sequence of strings."""
    if isinstance(value, str):
        raw: Iterable[object] = value.split(",")
    elif isinstance(value, (list, tuple)):
        raw = value
    else:
        raise ValueError(what)
    if not all(isinstance(entry, str) for entry in raw):
        raise ValueError(what)
    return [entry for entry in (str(e).strip() for e in raw) if entry]


def _map_accepts(noun: str, choices: Iterable[str], rule: str = "") -> str:
    """What a per-type map setting accepts, for a person."""
    return (f"comma-separated type={noun} (type: {_TYPES_TEXT}; {noun}: "
            f"{', '.join(choices)}{rule})")


def _type_map(value: object, choices: Mapping[str, _V], noun: str, what: str) -> dict[str, _V]:
    """Parse ``type=choice,...`` (or a mapping of type to choice) into ``{type: choices[choice]}``.

    Raises:
        ValueError: ``what`` (what the setting accepts), and the entry at fault.
    """
    if isinstance(value, Mapping):
        # A typed override: enum members are named as users write them.
        pairs = [(str(key), choice.name.lower() if isinstance(choice, enum.Enum) else choice)
                 for key, choice in value.items()]
    else:
        pairs = []
        for entry in _entries(value, what):
            key, sep, choice = entry.partition("=")
            if not sep:
                raise ValueError(f"{what}, not {entry!r}: an entry is type={noun}")
            pairs.append((key.strip(), choice.strip()))
    parsed: dict[str, _V] = {}
    for key, choice in pairs:
        if key not in _EVENT_TYPES:
            raise ValueError(f"{what}, not {key!r}: no such event type")
        if key in parsed:
            raise ValueError(f"{what}, not {key!r} twice")
        if not isinstance(choice, str) or choice not in choices:
            raise ValueError(f"{what}, not {key}={choice}: no such {noun}")
        parsed[key] = choices[choice]
    return parsed


def _map_text(mapping: Mapping[str, object]) -> str:
    """Write a per-type map back as ``type=choice,...``, the syntax it is read from."""
    return ",".join(
        f"{key}={value.name.lower() if isinstance(value, enum.Enum) else value}"
        for key, value in mapping.items()
    )


_SEQUENCE_CHOICES: Final[dict[str, SequencePolicy]] = {
    name: name for name in get_args(SequencePolicy)}
_LANE_CHOICES: Final = {priority.name.lower(): priority for priority in EventPriority}
_OVERFLOW_CHOICES: Final[dict[str, OverflowPolicy]] = {
    name: name for name in get_args(OverflowPolicy)}


def parse_sequence_policies(value: object) -> dict[str, SequencePolicy]:
    """Parse ``SILVERTINE_SEQUENCE_POLICIES`` (``market_data=strict,...``) or its dict.

    Raises:
        ValueError: saying what the setting accepts.
    """
    what = _map_accepts("policy", _SEQUENCE_CHOICES)
    return _type_map(value, _SEQUENCE_CHOICES, "policy", what)


def parse_lanes(value: object) -> dict[str, EventPriority]:
    """Parse ``SILVERTINE_LANES`` (``market_data=low,signal=critical``) or its dict.

    Raises:
        ValueError: saying what the setting accepts.
    """
    what = _map_accepts("lane", _LANE_CHOICES)
    return _type_map(value, _LANE_CHOICES, "lane", what)


def parse_overflow_policies(value: object) -> dict[str, OverflowPolicy]:
    """Parse ``SILVERTINE_OVERFLOW_POLICIES`` (``market_data=drop_oldest,...``) or its dict.

    Raises:
        ValueError: saying what the setting accepts; also for a shedding policy
            of order or fill, which must always block.
    """
    what = _map_accepts("policy", _OVERFLOW_CHOICES, "; order and fill only block")
    policies = _type_map(value, _OVERFLOW_CHOICES, "policy", what)
    for event_type, policy in policies.items():
        if event_type in CRITICAL_TYPES and policy != "block":
            raise ValueError(f"{what}, not {event_type}={policy}: {event_type} is never shed")
    return policies


def parse_handlers(value: object) -> tuple[str, ...]:
    """Parse ``SILVERTINE_HANDLERS`` (``pkg.module:function,...``); nothing is imported.

    Raises:
        ValueError: an entry is not shaped ``module:function``.
    """
    what = "comma-separated module:function, e.g. my_risk.handlers:setup"
    entries = _entries(value, what)
    for entry in entries:
        if not _HANDLER.match(entry):
            raise ValueError(f"{what}, not {entry!r}")
    return tuple(entries)


def parse_clock_servers(value: object) -> tuple[str, ...]:
    """Parse ``SILVERTINE_CLOCK_SERVERS`` (``host[:port],...``, ``[v6]:port`` for IPv6).

    Raises:
        ValueError: an entry has no host or a port outside 1..65535.
    """
    what = "comma-separated NTP host or host:port ([address]:port for IPv6)"
    entries = _entries(value, what)
    for entry in entries:
        try:
            parse_server(entry)
        except ValueError as exc:
            raise ValueError(f"{what}, not {entry!r} ({exc})") from exc
    return tuple(entries)


def parse_event_types(value: object) -> tuple[str, ...]:
    """Parse ``SILVERTINE_EVENT_TYPES`` (``order,fill``).

    Raises:
        ValueError: an entry is not an event type.
    """
    what = f"comma-separated types of {_TYPES_TEXT}"
    entries = _entries(value, what)
    for entry in entries:
        if entry not in _EVENT_TYPES:
            raise ValueError(f"{what}, not {entry!r}")
    return tuple(entries)


# --- retention, bounds and replication (issue #14) -----------------------------------


def _type_numbers(value: object, what: str, parse: Callable[[str], _N]) -> dict[str, _N]:
    """Parse ``type=<number>,...`` (or a mapping of type to number) with ``parse``.

    Raises:
        ValueError: ``what``, and the entry at fault.
    """
    if isinstance(value, Mapping):
        pairs = [(str(key), str(number)) for key, number in value.items()]
    else:
        pairs = []
        for entry in _entries(value, what):
            key, sep, number = entry.partition("=")
            if not sep:
                raise ValueError(f"{what}, not {entry!r}")
            pairs.append((key.strip(), number.strip()))
    parsed: dict[str, _N] = {}
    for key, number in pairs:
        if key not in _EVENT_TYPES:
            raise ValueError(f"{what}, not {key!r}: no such event type")
        if key in parsed:
            raise ValueError(f"{what}, not {key!r} twice")
        try:
            parsed[key] = parse(number)
        except ValueError as exc:
            raise ValueError(f"{what}, not {key}={number} ({exc})") from None
    return parsed


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError("at least 1")
    return number


def parse_log_retention(value: object) -> dict[str, float]:
    """Parse ``SILVERTINE_LOG_RETENTION`` (``market_data=1h,order=30d``) into seconds per type.

    Raises:
        ValueError: saying what the setting accepts.
    """
    what = (f"comma-separated type=age (type: {_TYPES_TEXT}; age: a number with s, m, h, "
            "d or w, e.g. market_data=1h,order=30d)")
    return _type_numbers(value, what, lambda text: parse_duration(str(text)))


def parse_log_max_entries(value: object) -> dict[str, int]:
    """Parse ``SILVERTINE_LOG_MAX_ENTRIES`` (``market_data=5000000``) into entries per type.

    Raises:
        ValueError: saying what the setting accepts.
    """
    what = (f"comma-separated type=entries (type: {_TYPES_TEXT}; entries: an integer "
            ">= 1, e.g. market_data=5000000)")
    return _type_numbers(value, what, _positive_int)


def _retention_text(mapping: Mapping[str, float]) -> str:
    return ",".join(f"{key}={format_duration(seconds)}" for key, seconds in mapping.items())


def _numbers_text(mapping: Mapping[str, int]) -> str:
    return ",".join(f"{key}={number}" for key, number in mapping.items())


_COMMA_SETTINGS: Final[dict[str, tuple[Callable[[object], Any], Callable[[Any], str]]]] = {
    "sequence_policies": (parse_sequence_policies, _map_text),
    "lanes": (parse_lanes, _map_text),
    "overflow_policies": (parse_overflow_policies, _map_text),
    "handlers": (parse_handlers, ",".join),
    "clock_servers": (parse_clock_servers, ",".join),
    "event_types": (parse_event_types, ",".join),
    "log_retention": (parse_log_retention, _retention_text),
    "log_max_entries": (parse_log_max_entries, _numbers_text),
}
"""Settings written as comma-separated text: how each is read, and written back."""


class Settings(BaseSettings):
    """Every setting of silvertine-streams; see the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False,
        # A bad URL or a secret must not reach a traceback (`--debug`) through its input.
        hide_input_in_errors=True,
    )

    # --- servers -----------------------------------------------------------
    kafka_url: str | None = Field(
        default=None,
        description="kafka://host:port[;host:port...]; unset = the embedded Tansu broker",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db, rediss:// for TLS, user:password@ before the host "
        "(or SILVERTINE_REDIS_USERNAME/_PASSWORD); unset = the embedded redis-server",
    )
    data_dir: Path = Field(
        default=Path(".silvertine"),
        description="where the embedded stack keeps PID files, logs, Redis AOF and tables",
    )
    kafka_port: int = Field(default=0, ge=0, le=65535, description="embedded broker port, 0 = free")
    redis_port: int = Field(default=0, ge=0, le=65535, description="embedded redis port, 0 = free")

    # --- security: Kafka SASL/TLS, Redis ACL/TLS (README: Security) ----------
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL login over TLS)",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (needed for SASL_*)"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (better: SILVERTINE_KAFKA_SASL_PASSWORD_FILE)"
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="file holding the SASL password (a container secret)"
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM CA certificates the brokers' certificates are checked "
        "against; unset = the system's CAs"
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate (mutual TLS), may hold the key too"
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM client key")
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="password of an encrypted client key"
    )
    kafka_ssl_key_password_file: Path | None = Field(
        default=None, description="file holding the client key's password"
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="check that a broker's certificate names the host we dial"
    )
    redis_username: str | None = Field(
        default=None, description="Redis ACL user (instead of the URL's user)"
    )
    redis_password: SecretStr | None = Field(
        default=None, description="Redis password, any characters (instead of the URL's)"
    )
    redis_password_file: Path | None = Field(
        default=None, description="file holding the Redis password (a container secret)"
    )
    redis_ssl_cafile: Path | None = Field(
        default=None, description="PEM CA certificates for a rediss:// server; unset = the "
        "system's CAs"
    )
    redis_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate for rediss:// (tls-auth-clients)"
    )
    redis_ssl_keyfile: Path | None = Field(default=None, description="PEM client key")
    redis_ssl_check_hostname: bool = Field(
        default=True, description="check that the Redis certificate names the host we dial"
    )
    redis_max_retries: int = Field(
        default=3, ge=0, le=100, description="retries of a failed Redis command (EventProcessor)"
    )
    redis_retry_delay_s: float = Field(
        default=1.0, ge=0, le=600, description="seconds between those retries"
    )
    redis_stream_max_length: int | None = Field(
        default=None, ge=1, description="approximate MAXLEN of the streams EventProcessor "
        "writes; unset = untrimmed (the canonical logs are never trimmed)"
    )

    # --- the Faust app -----------------------------------------------------
    app_id: str = Field(default="silvertine", min_length=1, description="consumer group / app id")
    partitions: int = Field(default=4, ge=1, le=1024, description="partitions per event topic")
    replication_factor: int = Field(default=1, ge=1, le=16, description="topic replication")
    table_store: str = Field(
        default="memory://", description="Faust table store: memory:// or rocksdb://"
    )
    web_host: str = Field(default="127.0.0.1", description="Faust web server bind address")
    web_port: int = Field(default=6066, ge=0, le=65535, description="Faust web server port")
    kafka_compression: Literal["none", "gzip"] = Field(
        default="none",
        description="compression of the record batches our producers send (none or gzip); "
        "gzip costs CPU per batch and stores ~3x less in a broker that keeps every message "
        "(the embedded Tansu)",
    )
    fetch_wait_ms: int = Field(
        default=10, ge=1, le=10_000, description="consumer fetch max wait (Faust hard-codes 1500)"
    )
    rebalance_timeout_s: float = Field(
        default=2.0, gt=0, le=600, description="consumer group rebalance timeout"
    )
    session_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="consumer group session timeout"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning or error (debug also shows "
        "tracebacks with start-up errors)",
    )
    allow_unsafe_redis: bool = Field(
        default=False,
        description="start even when Redis runs without AOF, with an eviction policy, or in "
        "cluster mode (a warning instead of a refusal; the log may then lose events)",
    )
    stop_timeout_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="how long `silvertine worker` lets its worker drain and commit after "
        "SIGTERM before it kills it",
    )
    startup_wait_s: float = Field(
        default=0.0, ge=0, le=3600,
        description="how long a starting worker waits for Kafka and Redis to answer before it "
        "gives up (0 = ask once); for compose start-up order",
    )

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
    max_event_bytes: int = Field(
        default=65_536, ge=1024, le=16 * 1024 * 1024,
        description="largest event JSON accepted; a bigger one is a dead letter (too_large) "
        "and the Publisher refuses it",
    )
    max_message_bytes: int = Field(
        default=983_040, ge=4096, le=64 * 1024 * 1024,
        description="largest Kafka message (an envelope) produced or accepted; under Kafka's "
        "default 1 MiB limits with room for the record batch's framing",
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
    handlers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
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

    # --- the in-process EventBus and the EventProcessor --------------------------
    bus_max_queue_size: int = Field(
        default=10_000, ge=1, description="capacity of each event type's queue in EventBus"
    )
    bus_enable_metrics: bool = Field(
        default=True, description="EventBus measures handler time for avg_processing_times"
    )
    bus_idempotency_window_s: float = Field(
        default=300.0, gt=0, description="seconds an event id published again on EventBus "
        "is dropped as a duplicate"
    )
    processor_batch_size: int = Field(
        default=100, ge=1, le=100_000, description="entries EventProcessor reads per batch"
    )
    processor_checkpoint_interval_s: float = Field(
        default=60.0, gt=0, description="seconds between EventProcessor checkpoints"
    )
    processor_consumer_name: str = Field(
        default="silvertine-processor", min_length=1,
        description="EventProcessor's Redis consumer name",
    )

    # --- ordering, lanes, flow control ----------------------------------------
    sequence_policies: Annotated[dict[str, SequencePolicy], NoDecode] = Field(
        default_factory=dict,
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
    lanes: Annotated[dict[str, EventPriority], NoDecode] = Field(
        default_factory=dict,
        description="per-type lane overrides, e.g. market_data=low,signal=critical "
        "(defaults: order/fill critical, signal/system high, market_data normal)",
    )
    event_types: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="comma-separated event types this worker consumes and mirrors (empty: "
        "all). Run order,fill in a worker group of their own (another SILVERTINE_APP_ID) "
        "so market data never shares their process",
    )
    lane_max_pause_s: float = Field(
        default=0.05, gt=0, description="longest stretch a lower lane is paused for critical work"
    )
    overflow_policies: Annotated[dict[str, OverflowPolicy], NoDecode] = Field(
        default_factory=dict,
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
    clock_servers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="comma-separated NTP host[:port]; empty = clock sync off"
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

    # --- retention, bounds and replication (issue #14) ----------------------------
    log_retention: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="per-type age after which canonical-log entries are trimmed, e.g. "
        "market_data=1h,order=30d (empty: keep forever); never past a handler group's cursor",
    )
    log_max_entries: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="per-type length beyond which the oldest canonical-log entries are "
        "trimmed, e.g. market_data=5000000 (empty: no bound); never past a handler group's cursor",
    )
    retention_interval_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="seconds between retention rounds (log trims, DLQ index sweep, dedupe gauges)",
    )
    dlq_max_len: int = Field(
        default=1_000_000, ge=0,
        description="entries the Redis dlq stream keeps, about (oldest removed first, counted "
        "in silvertine_dlq_trimmed_total; 0 = no bound)",
    )
    redis_wait_replicas: int = Field(
        default=0, ge=0, le=64,
        description="Redis replicas that must acknowledge each log and DLQ write (WAIT) before "
        "it counts as done and the Kafka offsets behind it move (0 = do not wait)",
    )
    redis_wait_timeout_ms: int = Field(
        default=1000, ge=1, le=60_000,
        description="how long one WAIT for replicas lasts before the write is retried",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Put the config file (if :func:`load_settings` was given one) below the environment."""
        config_file = _CONFIG_SOURCE.get()
        file_sources = (config_file,) if config_file is not None else ()
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                *file_sources)

    @field_validator("kafka_url")
    @classmethod
    def _check_kafka_url(cls, value: str | None) -> str | None:
        if value is not None and not _KAFKA_URL.match(value):
            raise ValueError("kafka://host:port[;host:port...]")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_redis_url(value)  # raises ValueError saying what it accepts
        return value

    @field_validator("kafka_sasl_mechanism", "kafka_security_protocol", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(*_PEM_FIELDS, *SECRET_FILES.values())
    @classmethod
    def _check_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"a readable file; {value} is not a file")
        return value

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: object) -> object:
        """Fill each secret from its ``*_FILE`` setting; refuse both at once."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for secret, file_field in SECRET_FILES.items():
            path = data.get(file_field)
            if path in (None, ""):
                continue
            if data.get(secret) not in (None, ""):
                _refuse(file_field, f"a file, or {ENV_PREFIX}{secret.upper()}, not both")
            try:
                data[secret] = read_secret_file(Path(path))
            except ValueError as exc:
                _refuse(file_field, f"a readable file holding the secret ({exc})")
        return data

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        """Refuse security settings that contradict each other or would be ignored."""
        protocol = self.kafka_security_protocol
        if protocol != "PLAINTEXT" and self.kafka_url is None:
            _refuse("kafka_url", f"your Kafka's URL, as {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL="
                                 f"{protocol} (the embedded broker is plaintext)")
        if protocol.startswith("SASL_"):
            for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, name) is None:
                    _refuse(name, f"set, as {ENV_PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}")
        else:
            for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, name) is not None:
                    _refuse("kafka_security_protocol",
                            f"SASL_SSL or SASL_PLAINTEXT, as {ENV_PREFIX}{name.upper()} is set")
        if not protocol.endswith("SSL"):
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
                         "kafka_ssl_key_password"):
                if getattr(self, name) is not None:
                    _refuse("kafka_security_protocol",
                            f"SSL or SASL_SSL, as {ENV_PREFIX}{name.upper()} is set")
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            _refuse("kafka_ssl_certfile", "set too: a client key needs its certificate")
        if self.redis_ssl_keyfile is not None and self.redis_ssl_certfile is None:
            _refuse("redis_ssl_certfile", "set too: a client key needs its certificate")
        address = parse_redis_url(self.redis_url) if self.redis_url is not None else None
        for name in ("redis_ssl_cafile", "redis_ssl_certfile"):
            if getattr(self, name) is not None and (address is None or not address.tls):
                _refuse("redis_url", f"a rediss:// URL (TLS), as {ENV_PREFIX}{name.upper()} is set")
        for name in ("redis_username", "redis_password"):
            if getattr(self, name) is None:
                continue
            if address is None:
                _refuse("redis_url", f"your Redis's URL, as {ENV_PREFIX}{name.upper()} is set "
                                     "(the embedded redis-server has no users)")
            elif getattr(address, name.removeprefix("redis_")) is not None:
                _refuse(name, f"unset, or the URL without a {name.removeprefix('redis_')}: "
                              "one place for each credential")
        return self

    @field_validator("timestamp_floor")
    @classmethod
    def _check_floor(cls, value: datetime) -> datetime:
        if value.utcoffset() is None:
            raise ValueError("an ISO-8601 time with a timezone, e.g. 2000-01-01T00:00:00Z")
        return value

    @field_validator(*_COMMA_SETTINGS, mode="before")
    @classmethod
    def _parse_comma_setting(cls, value: object, info: ValidationInfo) -> object:
        # The environment gives the text users write (NoDecode keeps pydantic from
        # reading it as JSON); keyword overrides may give the text or the typed value.
        parse, _ = _COMMA_SETTINGS[str(info.field_name)]
        return parse(value)

    @field_validator("table_store")
    @classmethod
    def _check_table_store(cls, value: str) -> str:
        # Faust's RocksDB store is rocksdb:// (backed by rocksdict); rocksdict:// fails.
        if value not in ("memory://", "rocksdb://"):
            raise ValueError("memory:// or rocksdb://")
        return value

    def __repr_args__(self):  # type: ignore[no-untyped-def]  # pydantic's own signature
        """Hide passwords in URLs when settings are printed or logged (secrets are SecretStr)."""
        for name, value in super().__repr_args__():
            if name in _URL_FIELDS and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    @property
    def redis_display(self) -> str:
        """The Redis URL for people: password masked; ``"(unset)"`` when not set."""
        return redact_url(self.redis_url) if self.redis_url is not None else "(unset)"

    @property
    def consumed_types(self) -> tuple[str, ...]:
        """The event types this worker runs agents and ingress mirrors for, in EVENT_TYPES order."""
        chosen = set(self.event_types)
        return tuple(t for t in _EVENT_TYPES if not chosen or t in chosen)

    @property
    def kafka_bootstrap(self) -> list[str]:
        """Return ``host:port`` strings for aiokafka, from :attr:`kafka_url`."""
        if self.kafka_url is None:
            raise ConfigError(f"{ENV_PREFIX}KAFKA_URL", None, "a URL (the stack is not up)")
        return self.kafka_url.removeprefix("kafka://").split(";")


def _refuse(field: str, accepted: str) -> None:
    """Fail validation naming ``field`` (which :func:`load_settings` turns into its variable)."""
    raise PydanticCustomError("silvertine_setting", accepted, {"field": field})


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Build :class:`Settings` from the environment, a config file, and overrides.

    Precedence, highest first: overrides (keyword arguments named like the
    fields), ``SILVERTINE_*`` environment variables, the config file, defaults.

    Args:
        config_file: the YAML config file; None = ``SILVERTINE_CONFIG``'s, if set.
        **overrides: settings by field name.

    Raises:
        UnknownSetting: a ``SILVERTINE_*`` variable is no setting (a typo would
            otherwise be ignored, and the worker would run without it).
        UnknownConfigKey: the file has a key that is no setting (same reason).
        ConfigError: naming the first bad variable and what it accepts;
            :class:`~silvertine_streams.errors.ConfigFileError` (naming the key
            and the file) when the bad value came from the file.
    """
    check_variable_names(os.environ)
    path = config_file if config_file is not None else os.environ.get(CONFIG_VARIABLE) or None
    source = ConfigFileSource(Settings, Path(path), os.environ) if path is not None else None
    with _reading(source):
        try:
            return Settings(**overrides)  # type: ignore[arg-type]  # pydantic validates them
        except ValidationError as exc:
            raise _config_error(exc, source, overrides) from exc


@contextmanager
def _reading(source: ConfigFileSource | None) -> Iterator[None]:
    """Let ``Settings.settings_customise_sources`` find ``source`` while settings are built."""
    token = _CONFIG_SOURCE.set(source)
    try:
        yield
    finally:
        _CONFIG_SOURCE.reset(token)


def _config_error(exc: ValidationError, source: ConfigFileSource | None,
                  overrides: Mapping[str, object]) -> ConfigError:
    """The first validation error, naming where its value came from: a variable or the file."""
    error = exc.errors()[0]
    context = error.get("ctx") or {}
    if error["type"] == "silvertine_setting":
        # A rule between settings: name the setting to change; its value is
        # shown unless it is a secret (a URL's password is masked by ConfigError).
        field = str(context["field"])
        value: object = _input_of(error.get("input"), field)
        accepted = str(error["msg"])
    else:
        field = str(error["loc"][0]) if error["loc"] else "?"
        value = error.get("input")
        accepted = _accepted(field, error)
    if source is not None and _from_file(field, source, overrides):
        return ConfigFileError(source.path, FIELD_KEYS[field], _shown(field, value), accepted)
    return ConfigError(f"{ENV_PREFIX}{field.upper()}", _shown(field, value), accepted)


def _from_file(field: str, source: ConfigFileSource, overrides: Mapping[str, object]) -> bool:
    """Whether ``field``'s value came from the config file (neither overridden nor in the env)."""
    variable = f"{ENV_PREFIX}{field.upper()}"
    in_env = any(name.upper() == variable for name in os.environ)
    return field in source.values and field not in overrides and not in_env


def _input_of(data: object, field: str) -> object:
    """The value of ``field`` in what a model validator was given (a dict or a model)."""
    if isinstance(data, Mapping):
        return data.get(field)
    return getattr(data, field, None)


def _shown(field: str, value: object) -> object:
    """A setting's value as an error may show it: secrets never, URLs without password."""
    if field in SECRET_FILES:
        return MASK
    if field in _URL_FIELDS and isinstance(value, str):
        return redact_url(value)
    return value


def supervisor_handshake() -> tuple[Path | None, int]:
    """The ready file and restart count ``silvertine worker``'s supervisor gave this process.

    Returns:
        (the file to touch once started, or None when not supervised; restarts so far).
    """
    ready = os.environ.get("SILVERTINE_READY_FILE")
    restarts = os.environ.get("SILVERTINE_RESTARTS", "0")
    return (Path(ready) if ready else None), int(restarts) if restarts.isdigit() else 0


def check_variable_names(environ: Mapping[str, str]) -> None:
    """Refuse a ``SILVERTINE_*`` variable that names no setting, naming the closest one.

    Raises:
        UnknownSetting: for the first unknown variable (in name order).
    """
    known = sorted(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields)
    for variable in sorted(environ):
        name = variable.upper()  # settings are read case-insensitively
        if (not name.startswith(ENV_PREFIX) or name in known or name in SUPERVISOR_VARIABLES
                or name == CONFIG_VARIABLE or name.startswith(FAUST_ENV_PREFIX)):
            continue
        # Compared without the prefix they all share, which would make anything look close.
        closest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX),
                                            [k.removeprefix(ENV_PREFIX)
                                             for k in (*known, CONFIG_VARIABLE)],
                                            n=1, cutoff=0.6)
        raise UnknownSetting(variable, f"{ENV_PREFIX}{closest[0]}" if closest else None)


def _accepted(field: str, error: Mapping[str, object]) -> str:
    """Describe, for a person, what ``field`` accepts."""
    reason = str(error.get("msg", "")).removeprefix("Value error, ")
    info = Settings.model_fields.get(field)
    if info is None or field in _COMMA_SETTINGS:
        return reason  # the comma-separated settings' parsers say it all
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


def settings_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """Return ``base`` without ``SILVERTINE_*`` plus variables that reproduce ``settings``.

    For starting a worker process with exactly these settings: the
    comma-separated settings are written in the syntax they are read from.

    Raises:
        ConfigError: a comma-separated setting holds a bad value (possible only
            when it was set by ``model_copy(update=...)``, which does not validate).
    """
    # SILVERTINE_CONFIG goes too: the variables below carry what the file set.
    env = {k: v for k, v in base.items() if not k.startswith(ENV_PREFIX)}
    # Not model_dump(): it warns about text that model_copy put in a typed field.
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        variable = f"{ENV_PREFIX}{name.upper()}"
        if name in _COMMA_SETTINGS:
            parse, text = _COMMA_SETTINGS[name]
            try:
                # Parsing again accepts the text form too, as model_copy may have put it there.
                env[variable] = text(parse(value))
            except ValueError as exc:
                raise ConfigError(variable, value, str(exc)) from exc
        elif isinstance(value, SecretStr):
            # The child reads a secret from its file again rather than from its environment.
            if getattr(settings, SECRET_FILES[name]) is None:
                env[variable] = value.get_secret_value()
        elif value is not None:
            env[variable] = str(value)
    return env
