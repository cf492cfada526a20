"""Fixtures the whole suite builds on.

One Kafka broker and one Redis per test session: the servers named by
``SILVERTINE_KAFKA_URL`` / ``SILVERTINE_REDIS_URL`` if set, else an embedded
stack (Tansu + redis-server) on free loopback ports in a fresh temporary data
dir, stopped by PID at the end of the session. Every session has its own dir
and ports, so an interrupted run never clashes with the next one, and the
servers are started with ``die_with_parent`` so even a SIGKILLed pytest leaves
none behind.

Per test: a fresh ``app_id`` (its own consumer group and topics' group state)
and an empty Redis database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from silvertine_streams.embedded import EmbeddedStack
from silvertine_streams.embedded.processes import pick_free_port
from silvertine_streams.errors import EmbeddedServerError
from silvertine_streams.settings import Settings, load_settings


@pytest.fixture(scope="session")
def _session_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, EmbeddedStack | None]]:
    """Start (or find, via env) the session's servers; yield settings and the stack."""
    # Ports are forced to 0 so a SILVERTINE_*_PORT meant for `make demo` cannot
    # make the test session clash with a running demo.
    base = load_settings(
        data_dir=tmp_path_factory.mktemp("silvertine-stack"), kafka_port=0, redis_port=0
    )
    if base.kafka_url is not None and base.redis_url is not None:
        yield base, None
        return
    stack = EmbeddedStack(base, die_with_parent=True)
    try:
        settings = stack.up()
    except EmbeddedServerError as exc:
        failure = str(exc)
    else:
        failure = ""
    if failure:
        # Fail, never skip: a suite that silently skips its integration tests
        # reports green on a machine where nothing was tested.
        pytest.fail(
            f"the embedded stack did not start, so no integration test can run.\n{failure}\n"
            "Set SILVERTINE_KAFKA_URL and SILVERTINE_REDIS_URL to use your own servers.",
            pytrace=False,
        )
    try:
        yield settings, stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def stack_settings(_session_stack: tuple[Settings, EmbeddedStack | None]) -> Settings:
    """Settings with ``kafka_url`` and ``redis_url`` of the session's servers."""
    return _session_stack[0]


@pytest.fixture(scope="session")
def embedded_stack(_session_stack: tuple[Settings, EmbeddedStack | None]) -> EmbeddedStack | None:
    """The session's :class:`EmbeddedStack`, for fault tests; ``None`` with external servers.

    ``stop_server`` / ``start_server`` bring a server back on the same port, so
    ``stack_settings`` stays valid. A stopped server must be started again by
    the test that stopped it (use ``try``/``finally``): later tests share it.
    """
    return _session_stack[1]


@pytest.fixture
def settings(stack_settings: Settings) -> Settings:
    """Settings for one test: the session's servers, a unique ``app_id``, free ports.

    A unique ``app_id`` gives each test its own consumer group, so no test
    inherits another's committed offsets. Metrics are off (``metrics_port=0``);
    a metrics test sets its own port.
    """
    return stack_settings.model_copy(
        update={
            "app_id": f"t-{uuid4().hex[:8]}",
            "web_port": pick_free_port(),
            "metrics_port": 0,
        }
    )


@pytest.fixture
async def redis_client(stack_settings: Settings) -> AsyncIterator[Redis]:
    """An async Redis client on the session's Redis, with the database flushed first.

    Replies are bytes (``decode_responses`` off), as the sinks see them.
    With ``SILVERTINE_REDIS_URL`` set this flushes *that* database: point it
    at a server you can wipe.
    """
    assert stack_settings.redis_url is not None
    client = Redis.from_url(stack_settings.redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
