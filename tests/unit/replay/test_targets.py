"""Replay targets built from settings: the handler sink's ``--handlers`` spec."""

from __future__ import annotations

import pytest

from silvertine_streams.errors import ConfigError
from silvertine_streams.replay.replayer import ReplayError
from silvertine_streams.replay.targets import HandlerSink
from silvertine_streams.settings import load_settings

# Builtins stand in for handler setups: each is called with the registry and subscribes nothing.
SETUPS = "builtins:id, builtins:callable"


def test_the_handler_sink_takes_its_setups_from_the_spec_or_the_settings() -> None:
    assert HandlerSink.from_settings(load_settings(), SETUPS).registry is not None
    assert HandlerSink.from_settings(load_settings(handlers=SETUPS)).registry is not None
    with pytest.raises(ReplayError):
        HandlerSink.from_settings(load_settings(handlers=SETUPS), "")


@pytest.mark.parametrize("spec", ["builtins.id", "builtins:id,:setup", "builtins:id:x"])
def test_a_malformed_spec_names_the_option_before_anything_is_imported(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        HandlerSink.from_settings(load_settings(), spec)
    assert caught.value.setting == "--handlers"
    assert "module:function" in caught.value.expected
