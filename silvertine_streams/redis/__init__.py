"""Redis at the edge: the one place redis-py clients are built (:mod:`.clients`).

Named like ``kafka/``. Imports are absolute, so ``import redis`` anywhere,
including in this package, is still redis-py.
"""

from __future__ import annotations

from silvertine_streams.redis.clients import client_name, redis_client, redis_security

__all__ = ["client_name", "redis_client", "redis_security"]
