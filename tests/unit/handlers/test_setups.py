"""Unit tests for silvertine_streams.handlers.setups: loading ``SILVERTINE_HANDLERS`` entries.

The entries name functions in this very module, so nothing outside the test is imported.
"""

from __future__ import annotations

import pytest

from silvertine_streams.errors import ConfigError
from silvertine_streams.handlers.registry import HandlerRegistry
from silvertine_streams.handlers.setups import load_handler_setups

HERE = __name__
NOT_CALLABLE = 42


def subscribe_orders(bus: HandlerRegistry) -> None:
    bus.subscribe(lambda event: None, ["order"], name="from-setup")


def subscribe_fills(bus: HandlerRegistry) -> None:
    bus.subscribe(lambda event: None, ["fill"], name="from-second-setup")


def test_entries_load_in_order_as_the_functions_they_name() -> None:
    setups = load_handler_setups([f"{HERE}:subscribe_orders", f"{HERE}:subscribe_fills"])
    assert setups == [subscribe_orders, subscribe_fills]
    registry = HandlerRegistry()
    for setup in setups:
        setup(registry)
    assert [s.name for (s,) in registry.handlers_for("order")] == ["from-setup"]
    assert [s.name for (s,) in registry.handlers_for("fill")] == ["from-second-setup"]


def test_no_entries_load_nothing() -> None:
    assert load_handler_setups([]) == []


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("tests.no_such_module_here:setup", "No module named 'tests.no_such_module_here'"),
        (f"{HERE}:missing_function", "has no attribute 'missing_function'"),
        (f"{HERE}", "module:function"),  # no ':function' part
        (":subscribe_orders", "module:function"),  # no module part
    ],
)
def test_an_entry_that_does_not_import_is_a_config_error_naming_the_setting(
    entry: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_handler_setups([f"{HERE}:subscribe_orders", entry])
    error = raised.value
    assert error.setting == "SILVERTINE_HANDLERS"
    assert error.value == entry
    assert str(error).startswith(f"SILVERTINE_HANDLERS={entry!r} is not valid")
    assert words in str(error)


def test_an_entry_naming_something_not_callable_is_a_config_error() -> None:
    entry = f"{HERE}:NOT_CALLABLE"
    with pytest.raises(ConfigError) as raised:
        load_handler_setups([entry])
    assert raised.value.setting == "SILVERTINE_HANDLERS"
    assert raised.value.value == entry
    assert "(a callable)" in str(raised.value)
