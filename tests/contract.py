"""The platform's event contract as an external producer sees it: its fields, and full events.

Shared by the unit tests of the event model and the integration tests that
send contract-shaped JSON through ``redis-cli XADD`` and confluent-kafka.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

COMMON_FIELDS = {"event_id", "timestamp", "event_type", "source", "metadata"}
"""Fields of every event."""

FIELDS_OF_TYPE: dict[str, set[str]] = {
    "market_data": {"symbol", "price", "volume", "bid", "ask", "bid_size", "ask_size"},
    "order": {"order_id", "symbol", "side", "order_type", "quantity", "price", "stop_price",
              "status", "strategy_id"},
    "fill": {"order_id", "symbol", "executed_quantity", "executed_price", "commission",
             "commission_asset", "exchange", "trade_id"},
    "signal": {"symbol", "signal_type", "strength", "strategy_id", "reason", "target_price",
               "stop_loss", "take_profit"},
}  # fmt: skip
"""Each type's own contract fields (DESIGN §2)."""


def full_contract_event(event_type: str, event_id: str, source: str) -> dict[str, Any]:
    """An event of ``event_type`` with every contract field set, as a contract producer sends it."""
    own: dict[str, dict[str, Any]] = {
        "market_data": {"symbol": "AAPL", "price": 150.25, "volume": 1200.0, "bid": 150.2,
                        "ask": 150.3, "bid_size": 300.0, "ask_size": 200.0},
        "order": {"order_id": f"o-{event_id}", "symbol": "AAPL", "side": "buy",
                  "order_type": "limit", "quantity": 25.0, "price": 151.0, "stop_price": None,
                  "status": "pending", "strategy_id": "breakout"},
        "fill": {"order_id": f"o-{event_id}", "symbol": "AAPL", "executed_quantity": 25.0,
                 "executed_price": 151.0, "commission": 0.25, "commission_asset": "USD",
                 "exchange": "XNAS", "trade_id": f"T-{event_id}"},
        "signal": {"symbol": "AAPL", "signal_type": "long", "strength": 0.7,
                   "strategy_id": "breakout", "reason": "new high", "target_price": 160.0,
                   "stop_loss": 145.0, "take_profit": 170.0},
    }
    return {"event_id": event_id, "timestamp": datetime.now(UTC).isoformat(),
            "event_type": event_type, "source": source, "metadata": {"desk": "eq"},
            **own[event_type]}


def as_json(body: dict[str, Any]) -> str:
    """The JSON text a producer sends."""
    return json.dumps(body)
