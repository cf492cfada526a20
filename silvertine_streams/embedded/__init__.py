"""The embedded stack: Tansu and redis-server started for ``make demo`` and ``make test``.

See :class:`EmbeddedStack`; :func:`resolve_settings_with_stack` is the one call
a command needs to get settings with both server URLs.
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
