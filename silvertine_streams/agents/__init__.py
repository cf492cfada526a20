"""A worker's agents: one batch loop per event type, each a thin loop around its pipeline.

* :mod:`~silvertine_streams.agents.composition`: the engine built from settings (no Faust).
* :mod:`~silvertine_streams.agents.worker`: wiring it into the Faust app.
* :mod:`~silvertine_streams.agents.fetch_loop`: the consumer's fetch loop, delivering
  fetched records to the :mod:`~silvertine_streams.agents.intake` mailboxes.
* :mod:`~silvertine_streams.agents.batch_loop`: the batch loop of one event type.
* :mod:`~silvertine_streams.agents.pipeline`: what happens to one batch's events.
* :mod:`~silvertine_streams.agents.outbox`: where dead letters and system events go.
* :mod:`~silvertine_streams.agents.lanes`, :mod:`~silvertine_streams.agents.holes`,
  :mod:`~silvertine_streams.agents.policies`: priority lanes, offset-hole filling,
  per-type policies.
"""

from __future__ import annotations

from silvertine_streams.agents.composition import Engine, build_engine
from silvertine_streams.agents.worker import register_agents

__all__ = ["Engine", "build_engine", "register_agents"]
