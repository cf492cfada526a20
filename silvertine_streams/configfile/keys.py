"""Where each setting lives in the config file: one declarative table, and the flattening.

The file has the platform's sections (``redis``, ``event_bus``, ``processor``,
``monitoring``) and ours beside them; every :class:`~silvertine_streams.settings.Settings`
field has exactly one key (a unit test holds the table to the fields and the
shipped ``config/event_engine.yaml`` to the table).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["FIELD_KEYS", "FILE_KEYS", "UnknownKey", "BadSection", "flatten"]

FILE_KEYS: Final[Mapping[str, str]] = {
    # --- the platform's sections ---------------------------------------------------
    "redis.url": "redis_url",
    "redis.max_retries": "redis_max_retries",
    "redis.retry_delay": "redis_retry_delay_s",
    "redis.stream_max_length": "redis_stream_max_length",
    "redis.username": "redis_username",
    "redis.password": "redis_password",
    "redis.password_file": "redis_password_file",
    "redis.ssl_cafile": "redis_ssl_cafile",
    "redis.ssl_certfile": "redis_ssl_certfile",
    "redis.ssl_keyfile": "redis_ssl_keyfile",
    "redis.ssl_check_hostname": "redis_ssl_check_hostname",
    "redis.allow_unsafe": "allow_unsafe_redis",
    "redis.wait_replicas": "redis_wait_replicas",
    "redis.wait_timeout_ms": "redis_wait_timeout_ms",
    "event_bus.max_queue_size": "bus_max_queue_size",
    "event_bus.enable_metrics": "bus_enable_metrics",
    "event_bus.idempotency_window": "bus_idempotency_window_s",
    "event_bus.handler_timeout": "handler_timeout_s",
    "event_bus.circuit_breaker.failure_threshold": "circuit_failure_threshold",
    "event_bus.circuit_breaker.reset_time": "circuit_reset_s",
    "processor.batch_size": "processor_batch_size",
    "processor.checkpoint_interval": "processor_checkpoint_interval_s",
    "processor.consumer_name": "processor_consumer_name",
    "monitoring.metrics_port": "metrics_port",
    "monitoring.metrics_host": "metrics_host",
    "monitoring.log_level": "log_level",
    # --- ours ----------------------------------------------------------------------
    "kafka.url": "kafka_url",
    "kafka.partitions": "partitions",
    "kafka.replication_factor": "replication_factor",
    "kafka.compression": "kafka_compression",
    "kafka.fetch_wait_ms": "fetch_wait_ms",
    "kafka.rebalance_timeout_s": "rebalance_timeout_s",
    "kafka.session_timeout_s": "session_timeout_s",
    "kafka.max_message_bytes": "max_message_bytes",
    "kafka.security_protocol": "kafka_security_protocol",
    "kafka.sasl_mechanism": "kafka_sasl_mechanism",
    "kafka.sasl_username": "kafka_sasl_username",
    "kafka.sasl_password": "kafka_sasl_password",
    "kafka.sasl_password_file": "kafka_sasl_password_file",
    "kafka.ssl_cafile": "kafka_ssl_cafile",
    "kafka.ssl_certfile": "kafka_ssl_certfile",
    "kafka.ssl_keyfile": "kafka_ssl_keyfile",
    "kafka.ssl_key_password": "kafka_ssl_key_password",
    "kafka.ssl_key_password_file": "kafka_ssl_key_password_file",
    "kafka.ssl_check_hostname": "kafka_ssl_check_hostname",
    "worker.app_id": "app_id",
    "worker.event_types": "event_types",
    "worker.handlers": "handlers",
    "worker.table_store": "table_store",
    "worker.web_host": "web_host",
    "worker.web_port": "web_port",
    "worker.stop_timeout_s": "stop_timeout_s",
    "worker.startup_wait_s": "startup_wait_s",
    "worker.overlap_writes": "overlap_writes",
    "worker.memory_limit_mb": "memory_limit_mb",
    "embedded.data_dir": "data_dir",
    "embedded.kafka_port": "kafka_port",
    "embedded.redis_port": "redis_port",
    "pipeline.envelope_max_events": "envelope_max_events",
    "pipeline.max_event_bytes": "max_event_bytes",
    "pipeline.dedupe_window_s": "dedupe_window_s",
    "pipeline.sink_retry_max_s": "sink_retry_max_s",
    "pipeline.timestamp_future_tolerance_s": "timestamp_future_tolerance_s",
    "pipeline.timestamp_floor": "timestamp_floor",
    "lanes.priorities": "lanes",
    "lanes.max_pause_s": "lane_max_pause_s",
    "policies.sequence": "sequence_policies",
    "policies.overflow": "overflow_policies",
    "policies.reorder_wait_strict_s": "reorder_wait_strict_s",
    "policies.reorder_wait_best_effort_s": "reorder_wait_best_effort_s",
    "policies.reorder_max_held": "reorder_max_held",
    "policies.overload_high_lag": "overload_high_lag",
    "policies.overload_low_lag": "overload_low_lag",
    "policies.overload_keep_per_batch": "overload_keep_per_batch",
    "policies.publish_max_lag": "publish_max_lag",
    "policies.publish_max_backlog": "publish_max_backlog",
    "retention.log_age": "log_retention",
    "retention.log_max_entries": "log_max_entries",
    "retention.interval_s": "retention_interval_s",
    "retention.dlq_max_len": "dlq_max_len",
    "clock.servers": "clock_servers",
    "clock.interval_s": "clock_interval_s",
    "clock.timeout_s": "clock_timeout_s",
    "clock.max_offset_ms": "clock_max_offset_ms",
    "clock.stale_after_s": "clock_stale_after_s",
}
"""Each key of the file (its dotted path) and the settings field it sets."""

FIELD_KEYS: Final[Mapping[str, str]] = {field: key for key, field in FILE_KEYS.items()}
"""Each settings field and its key in the file, for error messages."""

_SECTIONS: Final = frozenset(
    key.rsplit(".", depth)[0] for key in FILE_KEYS for depth in range(1, key.count(".") + 1)
)


class UnknownKey(ValueError):
    """A key of the file that is no setting.

    Attributes:
        key: its dotted path.
        closest: the valid key or section it most resembles, if any.
    """

    def __init__(self, key: str, closest: str | None) -> None:
        super().__init__(key)
        self.key = key
        self.closest = closest


class BadSection(ValueError):
    """A section (or the whole file) that is not a mapping of keys.

    Attributes:
        key: the section's dotted path (empty for the whole file).
        value: what it holds instead.
    """

    def __init__(self, key: str, value: object) -> None:
        super().__init__(key)
        self.key = key
        self.value = value


def flatten(tree: object) -> dict[str, Any]:
    """Turn the loaded, interpolated file into ``{field: value}``.

    ``null`` values are left out (not set). A mapping value (the per-type
    settings, e.g. ``lanes.priorities: {market_data: low}``) becomes the text
    its environment variable holds (``market_data=low``), so it replaces a
    lower source's value rather than being merged into it.

    Raises:
        UnknownKey: a key that is no setting (the first, in file order).
        BadSection: a section that is not a mapping.
    """
    if tree is None:
        return {}
    found: dict[str, Any] = {}
    _walk(tree, "", found)
    return found


def _walk(section: object, prefix: str, found: dict[str, Any]) -> None:
    if not isinstance(section, Mapping):
        raise BadSection(prefix, section)
    for name, value in section.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if key in FILE_KEYS:
            if value is not None:
                found[FILE_KEYS[key]] = _leaf(value)
        elif key in _SECTIONS:
            if value is not None:  # an empty section
                _walk(value, key, found)
        else:
            closest = difflib.get_close_matches(key, [*FILE_KEYS, *_SECTIONS], n=1, cutoff=0.6)
            raise UnknownKey(key, closest[0] if closest else None)


def _leaf(value: object) -> object:
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return value
