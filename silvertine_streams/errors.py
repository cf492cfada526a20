"""Errors raised by silvertine-streams.

Every error we raise derives from :class:`SilvertineError` and carries the data
a caller needs to act on it, not only a message.
"""

from __future__ import annotations

import re

from silvertine_streams.security import redact_url

_URL_PASSWORD = re.compile(r"(//[^:/@\s]*):\S*@")
_QUERY_SECRET = re.compile(r"(?i)\b(password|passwd|secret|token|key)=[^&\s'\"]*")


def redact(text: str) -> str:
    """Hide passwords in URLs (``//user:***@host``) and secret query parameters in ``text``."""
    return _QUERY_SECRET.sub(r"\1=***", _URL_PASSWORD.sub(r"\1:***@", text))


class SilvertineError(Exception):
    """Root of every error raised by silvertine-streams."""


class ConfigError(SilvertineError):
    """A setting has a value we cannot run with.

    Attributes:
        setting: the environment variable that holds the bad value.
        value: the value as given.
        expected: what would have been accepted.
    """

    def __init__(self, setting: str, value: object, expected: str) -> None:
        self.setting = setting
        self.value = value
        self.expected = expected
        # A bad URL may hold a password: the message never repeats it.
        super().__init__(redact(f"{setting}={value!r} is not valid; accepted: {expected}"))


class UnknownSetting(ConfigError):
    """A ``SILVERTINE_*`` variable that is no setting (a typo would otherwise be ignored).

    Attributes:
        setting: the unknown variable.
        closest: the valid setting it most resembles, if any.
    """

    def __init__(self, setting: str, closest: str | None) -> None:
        hint = f"; did you mean {closest}?" if closest else ""
        # The value is not shown: a misspelt URL variable may hold a password.
        super().__init__(setting, "", "a setting from the README's settings table")
        self.closest = closest
        self.args = (f"{setting} is not a setting{hint} (see the README's settings table)",)


class ConfigFileError(ConfigError):
    """A key of the config file has a value we cannot run with.

    Attributes:
        path: the config file.
        setting: the key's dotted path in the file, e.g. ``redis.url`` (empty when
            the whole file is at fault).
        value: the value as given (a secret's is masked by the caller).
        expected: what would have been accepted.
    """

    def __init__(self, path: object, key: str, value: object, expected: str,
                 problem: str | None = None) -> None:
        super().__init__(key, value, expected)
        self.path = str(path)
        # ``problem`` replaces "key=value is not valid" when there is no value to show.
        if problem is None:
            text = f"{key}={value!r} is not valid; accepted: {expected}"
        else:
            text = f"{key}: {problem}" if key else problem  # no key: the whole file
        self.args = (redact(f"{self.path}: {text}"),)


class UnknownConfigKey(ConfigFileError):
    """A key of the config file that is no setting (a typo would otherwise be ignored).

    Attributes:
        path: the config file.
        setting: the unknown key's dotted path.
        closest: the valid key it most resembles, if any.
    """

    def __init__(self, path: object, key: str, closest: str | None) -> None:
        # The value is not shown: a misspelt password key may hold a password.
        super().__init__(path, key, "", "a key of the shipped config/event_engine.yaml")
        self.closest = closest
        hint = f"; did you mean {closest}?" if closest else ""
        self.args = (f"{self.path}: {key} is not a setting{hint} "
                     "(the shipped config/event_engine.yaml lists every key)",)


class ServerUnavailable(SilvertineError):
    """A server we need did not answer.

    Attributes:
        url: the URL we tried.
        reason: what went wrong, for a person.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact(redact_url(url))
        self.reason = redact(reason)
        super().__init__(f"cannot reach {self.url}: {self.reason}")


class CredentialsRefused(ServerUnavailable):
    """A server answered but refused our user or password (never shown)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.args = (f"{self.url} refused our credentials: {self.reason}",)


class EventTooLarge(SilvertineError):
    """An event whose JSON is over the per-event bound (``SILVERTINE_MAX_EVENT_BYTES``).

    Attributes:
        event_id: the event's id.
        size: its JSON's length in bytes.
        limit: the bound.
    """

    def __init__(self, event_id: str, size: int, limit: int) -> None:
        self.event_id = event_id
        self.size = size
        self.limit = limit
        super().__init__(f"event {event_id} is {size} bytes of JSON, over the {limit}-byte "
                         "limit (SILVERTINE_MAX_EVENT_BYTES); it was not sent")


class UnsafeServer(SilvertineError):
    """A server runs with a setting under which our guarantees do not hold.

    Attributes:
        server: which server (``redis`` or ``kafka``) and where, password hidden.
        setting: the server's setting to change.
        found: its current value.
        needed: the value we need, and why.
    """

    def __init__(self, server: str, setting: str, found: str, needed: str) -> None:
        self.server = redact(server)
        self.setting = setting
        self.found = found
        self.needed = needed
        super().__init__(f"{self.server} runs with {setting} {found!r}; set {setting} {needed}")


class EmbeddedServerError(SilvertineError):
    """An embedded server (Tansu or redis-server) failed to start or stop.

    Attributes:
        server: ``"kafka"`` or ``"redis"``.
        reason: what went wrong.
        log_tail: the last lines the server wrote, if any.
    """

    def __init__(self, server: str, reason: str, log_tail: str = "") -> None:
        self.server = server
        self.reason = reason
        self.log_tail = log_tail
        message = f"embedded {server}: {reason}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)


class TopicMismatch(SilvertineError):
    """An existing topic has a partition count other than the configured one.

    Attributes:
        topic: the topic name.
        expected: the configured partition count.
        actual: the partition count the broker reports.
    """

    def __init__(self, topic: str, expected: int, actual: int) -> None:
        self.topic = topic
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"topic {topic!r} has {actual} partitions but SILVERTINE_PARTITIONS={expected}; "
            "symbols would land on other partitions than their history. "
            "Delete the topic or set SILVERTINE_PARTITIONS to match."
        )


class SequenceGap(SilvertineError):
    """A stream skipped one or more sequence numbers.

    Attributes:
        stream: the stream key, ``source/symbol``.
        expected: the sequence that should have come next.
        got: the sequence that came instead.
    """

    def __init__(self, stream: str, expected: int, got: int) -> None:
        self.stream = stream
        self.expected = expected
        self.got = got
        super().__init__(f"sequence gap on {stream}: expected {expected}, got {got}")


class InvalidEvent(SilvertineError):
    """An event failed decoding or validation; it belongs in the DLQ.

    Attributes:
        reason: what is wrong, for a person (e.g. ``"Price must be positive"``).
        payload: the bytes as received.
    """

    def __init__(self, reason: str, payload: bytes = b"") -> None:
        self.reason = reason
        self.payload = payload
        super().__init__(reason)


class ActionRefused(SilvertineError):
    """An operator action was refused before it changed anything.

    The message says why and what to do instead (stop the workers, pass
    ``--yes``, pick another topic, ...). Commands end with exit status 2 on it,
    as on a usage error.
    """


class LeaseLost(SilvertineError):
    """A worker found that another one holds a lease it was acting under.

    What it was doing is not recorded (its write is fenced off); the new
    holder redoes it.

    Attributes:
        lease: the lease key, e.g. ``lease:handlers:<app id>``.
        holder: who this worker is (its consumer name).
    """

    def __init__(self, lease: str, holder: str) -> None:
        self.lease = lease
        self.holder = holder
        super().__init__(f"{holder} no longer holds {lease}; another worker took over")


class ReplicationTimeout(SilvertineError):
    """Fewer Redis replicas acknowledged a write than ``SILVERTINE_REDIS_WAIT_REPLICAS`` asks.

    The write is on the primary but not known to be on the replicas, so the
    sink treats it as not landed yet: it retries (backpressure) and the Kafka
    offsets behind it are not acknowledged.

    Attributes:
        sink: which sink, e.g. ``"log:order"``.
        acknowledged: replicas that acknowledged within the timeout.
        wanted: replicas asked for.
    """

    def __init__(self, sink: str, acknowledged: int, wanted: int) -> None:
        self.sink = sink
        self.acknowledged = acknowledged
        self.wanted = wanted
        super().__init__(f"{sink}: {acknowledged} of {wanted} Redis replicas acknowledged "
                         "the write in time")
