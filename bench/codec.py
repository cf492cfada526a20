"""Scenario: decode + validate one 500-event market-data envelope, in process.

The same envelope bytes (500 quotes, as the publisher writes them) go through:

* **ours**: `silvertine_streams.events.decode_message(data, "market_data")`. One
  msgspec call decodes the whole array into frozen structs; every event's rules
  (`__post_init__`: positive prices, bid ≤ ask, sizes, symbol, ids, UTC
  timestamp, int64 sequence/`ts_ns`) run during that call, and the type check
  follows. This is exactly what an agent does per message.
* **faust.Record** (Faust's defaults: `validation=False`, no coercion, no ISO
  dates): Faust's `json` codec `loads`, then `Record.from_data(dict)` per event.
  No rule is checked and `timestamp` stays a string.
* **faust.Record, validation=True** (`coerce=True, isodates=True`): types are
  checked and converted; value rules (price > 0, bid ≤ ask) still are not.
* **pydantic v2, seed style**: `json.loads`, then `Model.model_validate(dict)` per
  event — the seed's `from_dict` shape — with the same rules as ours (`Field`
  bounds, an aware datetime, and a `model_validator` for bid ≤ ask).
* **pydantic v2, `validate_json`**: `TypeAdapter(list[Model]).validate_json(data)`,
  pydantic's fastest path (one call in Rust for the whole envelope).

timeit-style: each variant decodes the envelope in a loop of ~0.15 s with the
cyclic GC off (as `timeit` does); the variants are interleaved round by round.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, Optional, cast

import faust
from faust.serializers import codecs
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from bench.harness import BenchContext, BenchError
from bench.pipeline_throughput import make_events
from bench.report import Metric, Ratio, Row, Run, ScenarioReport
from silvertine_streams.events import EventType, MarketDataEvent, decode_message, encode_batch

NAME = "codec"
TITLE = "Codec: decode + validate a 500-event envelope (µs/event, in process)"
STACK = None  # in process: no servers
ENVELOPE_EVENTS = 500
ROUND_S = 0.15


class FaustQuote(faust.Record, serializer="json"):
    """The market-data event as a Faust model with Faust's defaults."""

    event_type: str
    event_id: str
    timestamp: datetime
    source: str
    metadata: dict
    sequence: Optional[int]  # noqa: UP045  (Faust reads the annotation at runtime)
    ts_ns: int
    symbol: str
    price: float
    volume: float
    bid: Optional[float]  # noqa: UP045
    ask: Optional[float]  # noqa: UP045
    bid_size: Optional[float]  # noqa: UP045
    ask_size: Optional[float]  # noqa: UP045


class FaustQuoteValidated(FaustQuote, validation=True, coerce=True, isodates=True):
    """The same model with Faust's type validation and coercion switched on."""


class PydanticQuote(BaseModel):
    """The market-data event as the seed modelled it, with our rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: Literal["market_data"]
    event_id: str = Field(min_length=1, max_length=128)
    timestamp: AwareDatetime
    source: str = Field(min_length=1, max_length=128)
    metadata: dict[str, Any]
    sequence: int | None = Field(default=None, ge=0, le=2**63 - 1)
    ts_ns: int = Field(gt=0, le=2**63 - 1)
    symbol: str = Field(min_length=1, max_length=64)
    price: float = Field(gt=0, allow_inf_nan=False)
    volume: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    bid: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    ask: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    bid_size: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    ask_size: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bid_not_above_ask(self) -> PydanticQuote:
        if self.bid is not None and self.ask is not None and self.bid > self.ask:
            raise ValueError("Bid cannot exceed ask")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PydanticQuote:
        return cls.model_validate(data)


def _variants() -> dict[str, tuple[str, Callable[[bytes], list[Any]]]]:
    faust_loads = codecs.get_codec("json").loads
    envelope_adapter = TypeAdapter(list[PydanticQuote])
    market_data = EventType.MARKET_DATA

    def ours(data: bytes) -> list[Any]:
        return decode_message(data, market_data).events

    def faust_default(data: bytes) -> list[Any]:
        return [FaustQuote.from_data(d) for d in faust_loads(data)]

    def faust_validated(data: bytes) -> list[Any]:
        return [FaustQuoteValidated.from_data(d) for d in faust_loads(data)]

    def pydantic_seed(data: bytes) -> list[Any]:
        return [PydanticQuote.from_dict(d) for d in json.loads(data)]

    def pydantic_json(data: bytes) -> list[Any]:
        return envelope_adapter.validate_json(data)

    return {
        "ours": ("ours: `decode_message` (msgspec, rules in `__post_init__`)", ours),
        "faust": ("faust.Record, Faust defaults (json codec `loads` + `from_data`, "
                  "no validation)", faust_default),
        "faust_validated": ("faust.Record, `validation=True, coerce=True, isodates=True`",
                            faust_validated),
        "pydantic_seed": ("pydantic v2, seed style (`json.loads` + `from_dict` → "
                          "`model_validate` per event)", pydantic_seed),
        "pydantic_json": ("pydantic v2, `TypeAdapter(list[Model]).validate_json` "
                          "(whole envelope)", pydantic_json),
    }


def _check(name: str, decoded: list[Any], prices: list[float]) -> None:
    """Every variant must decode the same 500 events (not a broken fast path)."""
    if [float(e.price) for e in decoded] != prices:
        raise BenchError(f"codec variant {name} decoded something else")


def _time(fn: Callable[[bytes], list[Any]], data: bytes, number: int) -> float:
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(number):
            fn(data)
        return time.perf_counter() - started
    finally:
        gc.enable()


async def run(ctx: BenchContext) -> ScenarioReport:
    events = make_events(ENVELOPE_EVENTS)
    data = encode_batch(events)
    prices = [cast(MarketDataEvent, e).price for e in events]
    variants = _variants()
    rows = {key: Row(key, label) for key, (label, _) in variants.items()}
    numbers = {}
    for key, (_, fn) in variants.items():
        _check(key, fn(data), prices)
        one = _time(fn, data, 3) / 3  # warm up, size the loop
        numbers[key] = max(1, int(ROUND_S / one))
    rounds = max(ctx.runs * 3, 3)
    for _ in range(rounds):
        for key, (_, fn) in variants.items():
            seconds = _time(fn, data, numbers[key])
            n = numbers[key] * ENVELOPE_EVENTS
            rows[key].runs.append(Run(events=n, seconds=seconds,
                                      values={"us_per_event": seconds / n * 1e6}))
    for key, row in rows.items():
        ctx.say(f"[{NAME}] {key:16s} {row.median_of('us_per_event'):7.2f} µs/event")
    report = ScenarioReport(
        name=NAME, title=TITLE,
        description=(__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nThis run: one envelope of {ENVELOPE_EVENTS} quotes ({len(data):,} bytes), "
        f"{rounds} rounds per variant.",
        rows=list(rows.values()), cpu_processes=(),
        metrics=[Metric("us_per_event", "µs/event", 2), Metric("rate", "events/s", 0)],
        unit_note="Lower µs/event is better; the ratios below are *their µs / ours*, "
                  "so >1× means ours is faster.",
    )
    for key in variants:
        if key != "ours":
            report.ratios.append(Ratio(f"{rows[key].label.split(',')[0].split(' (')[0]} "
                                       f"[{key}] / ours", key, "ours", "us_per_event"))
    report.add_notes()
    return report
