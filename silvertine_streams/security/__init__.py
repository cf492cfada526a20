"""Credentials without the clients: Redis URLs with any password, masking, secret files.

Pure (no client library, no server): :mod:`silvertine_streams.settings`
validates with it, and the two client factories (``kafka/clients.py``,
``redis/clients.py``) build their clients from what it returns.
"""

from __future__ import annotations

from silvertine_streams.security.credentials import (
    MASK,
    REDIS_URL_SHAPE,
    RedisAddress,
    parse_redis_url,
    read_secret_file,
    redact_url,
)

__all__ = [
    "MASK",
    "REDIS_URL_SHAPE",
    "RedisAddress",
    "parse_redis_url",
    "read_secret_file",
    "redact_url",
]
