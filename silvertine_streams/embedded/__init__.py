"""The embedded stack: Tansu and redis-server started for ``make demo`` and ``make test``.

See :class:`EmbeddedStack`; :func:`resolve_settings_with_stack` is the one call
a command needs to get settings with both server URLs.

Modules: :mod:`.stack` (the stack of one data dir), :mod:`.servers` (binaries
and command lines), :mod:`.probes` (readiness checks), :mod:`.processes`
(spawning, state files, stopping by PID).
"""

from __future__ import annotations

from silvertine_streams.embedded.stack import (
    INSTALL_HINT,
    KAFKA,
    REDIS,
    SERVER_NAMES,
    EmbeddedStack,
    ServerStatus,
    redis_server_binary,
    resolve_settings_with_stack,
    tansu_binary,
)

__all__ = [
    "INSTALL_HINT",
    "KAFKA",
    "REDIS",
    "SERVER_NAMES",
    "EmbeddedStack",
    "ServerStatus",
    "redis_server_binary",
    "resolve_settings_with_stack",
    "tansu_binary",
]
