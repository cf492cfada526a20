"""Unit tests for silvertine_streams.cli.common: settings for the operations commands,
time options, the Redis client per command, and the table console.

No servers: where the running embedded stack is consulted, a stand-in answers.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

import silvertine_streams.embedded
from silvertine_streams.cli.common import (
    EVENT_TYPE,
    config_option,
    load_settings,
    parse_time,
    run,
    running_stack_settings,
    stdout_console,
    with_redis,
)
from silvertine_streams.embedded.stack import ServerStatus
from silvertine_streams.errors import SilvertineError
from silvertine_streams.topics import EVENT_TYPES

KAFKA_URL = "kafka://127.0.0.1:19092"
REDIS_URL = "redis://127.0.0.1:16390/0"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean SILVERTINE_* environment whose data dir is a fresh temporary one."""
    for name in list(os.environ):
        if name.startswith("SILVERTINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SILVERTINE_DATA_DIR", str(tmp_path))
    return tmp_path


class FakeStack:
    """Stands in for EmbeddedStack: reports the servers a test says are running."""

    running: dict[str, str] = {}
    consulted = 0

    def __init__(self, settings: Any, **_: object) -> None:
        pass

    def status(self) -> list[ServerStatus]:
        FakeStack.consulted += 1
        return [ServerStatus(name, 4242, 1, url, alive=True) if url else
                ServerStatus(name, None, None, None, alive=False)
                for name, url in (("kafka", self.running.get("kafka")),
                                  ("redis", self.running.get("redis")))]


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> type[FakeStack]:
    monkeypatch.setattr(silvertine_streams.embedded, "EmbeddedStack", FakeStack)
    monkeypatch.setattr(FakeStack, "running", {})
    monkeypatch.setattr(FakeStack, "consulted", 0)
    return FakeStack


# --- settings -------------------------------------------------------------------


def test_settings_come_from_the_environment(data_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILVERTINE_PARTITIONS", "7")
    settings = load_settings()
    assert settings.partitions == 7
    assert Path(settings.data_dir) == data_dir


@click.command()
@config_option
def show_app_id() -> None:
    click.echo(load_settings().app_id)


def test_the_config_option_names_the_file_settings_are_read_from(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = data_dir / "engine.yaml"
    config.write_text("worker:\n  app_id: from-the-file\n")
    assert CliRunner().invoke(show_app_id, []).output == "silvertine\n"
    assert CliRunner().invoke(show_app_id, ["--config", str(config)]).output == "from-the-file\n"
    # SILVERTINE_CONFIG names it too; a SILVERTINE_* variable wins over the file.
    monkeypatch.setenv("SILVERTINE_CONFIG", str(config))
    assert CliRunner().invoke(show_app_id, []).output == "from-the-file\n"
    monkeypatch.setenv("SILVERTINE_APP_ID", "from-the-env")
    assert CliRunner().invoke(show_app_id, ["--config", str(config)]).output == "from-the-env\n"


def test_set_urls_are_used_and_the_stack_is_not_consulted(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, stack: type[FakeStack]
) -> None:
    monkeypatch.setenv("SILVERTINE_KAFKA_URL", KAFKA_URL)
    monkeypatch.setenv("SILVERTINE_REDIS_URL", REDIS_URL)
    settings = running_stack_settings(kafka=True, redis=True)
    assert (settings.kafka_url, settings.redis_url) == (KAFKA_URL, REDIS_URL)
    assert stack.consulted == 0


def test_unset_urls_are_taken_from_the_running_stack(
    data_dir: Path, stack: type[FakeStack]
) -> None:
    stack.running = {"kafka": KAFKA_URL, "redis": REDIS_URL}
    settings = running_stack_settings(kafka=True, redis=True)
    assert (settings.kafka_url, settings.redis_url) == (KAFKA_URL, REDIS_URL)
    only_redis = running_stack_settings()  # the default: Redis only
    assert (only_redis.kafka_url, only_redis.redis_url) == (None, REDIS_URL)


@pytest.mark.parametrize(("kafka", "redis", "missing"),
                         [(False, True, "redis"), (True, False, "kafka"), (True, True, "kafka")])
def test_a_needed_server_that_is_neither_set_nor_running_is_named(
    data_dir: Path, stack: type[FakeStack], kafka: bool, redis: bool, missing: str
) -> None:
    with pytest.raises(SilvertineError) as raised:
        running_stack_settings(kafka=kafka, redis=redis)
    message = str(raised.value)
    assert message.startswith(f"no {missing} to talk to: set SILVERTINE_{missing.upper()}_URL")
    assert "`silvertine stack up`" in message and str(data_dir) in message


def test_a_half_running_stack_still_names_the_missing_server(
    data_dir: Path, stack: type[FakeStack]
) -> None:
    stack.running = {"kafka": KAFKA_URL}
    with pytest.raises(SilvertineError, match="^no redis to talk to"):
        running_stack_settings(kafka=True, redis=True)


def test_an_empty_data_dir_has_no_stack_and_none_is_started(data_dir: Path) -> None:
    # The real EmbeddedStack: had it started one, this would return its URLs.
    with pytest.raises(SilvertineError, match="SILVERTINE_REDIS_URL"):
        running_stack_settings()


# --- time options ---------------------------------------------------------------


def test_time_options_are_iso_8601_in_utc() -> None:
    assert parse_time(None, "--since") is None
    assert parse_time("2026-03-02T12:00:00Z", "--since") == datetime(2026, 3, 2, 12, tzinfo=UTC)
    plus_two = parse_time("2026-03-02T14:00:00+02:00", "--until")
    assert plus_two == datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert plus_two is not None and plus_two.utcoffset() == timedelta(0)
    naive = parse_time("2026-03-02T12:00", "--since")
    assert naive is not None and naive.tzinfo is not None  # no zone: taken as UTC
    assert naive == datetime(2026, 3, 2, 12, tzinfo=UTC)


def test_a_bad_time_is_a_usage_error_naming_the_option() -> None:
    with pytest.raises(click.BadParameter) as raised:
        parse_time("yesterday", "--since")
    assert raised.value.param_hint == "--since"
    assert "'yesterday' is not an ISO-8601 time" in raised.value.format_message()


def test_the_type_option_offers_every_event_type() -> None:
    assert tuple(EVENT_TYPE.choices) == EVENT_TYPES


# --- running coroutines, Redis clients ------------------------------------------


def test_run_returns_what_the_coroutine_returns() -> None:
    async def answer() -> int:
        return 42

    assert run(answer) == 42


def test_run_calls_the_factory_once_on_a_loop_it_closes_afterwards() -> None:
    import asyncio

    loops: list[asyncio.AbstractEventLoop] = []

    async def record_loop() -> None:
        loops.append(asyncio.get_running_loop())

    run(record_loop)
    run(record_loop)
    assert len(loops) == 2 and loops[0] is not loops[1]
    assert all(loop.is_closed() for loop in loops)


async def test_with_redis_hands_a_client_over_and_closes_it_even_on_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[Redis] = []
    original = Redis.aclose

    async def recording_aclose(self: Redis, *args: Any, **kwargs: Any) -> None:
        closed.append(self)
        await original(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "aclose", recording_aclose)
    monkeypatch.setenv("SILVERTINE_REDIS_URL", REDIS_URL)
    settings = load_settings()
    seen: list[Redis] = []

    async def body(client: Redis) -> str:
        seen.append(client)
        return "done"

    assert await with_redis(settings, body) == "done"
    assert closed == seen and isinstance(seen[0], Redis)
    kwargs = seen[0].connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 16390, 0)

    async def failing(client: Redis) -> str:
        seen.append(client)
        raise ValueError("body failed")

    with pytest.raises(ValueError, match="body failed"):
        await with_redis(settings, failing)
    assert closed == seen and len(closed) == 2


# --- console --------------------------------------------------------------------


def test_tables_piped_to_a_file_are_wide_so_no_cell_is_cut(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(sys, "stdout", Pipe())
    assert stdout_console().width == 200


def test_tables_on_a_terminal_take_its_width(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setenv("COLUMNS", "123")
    assert stdout_console().width == 123
