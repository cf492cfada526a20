"""The demo desk: a live trading loop on the engine (``make demo``).

The trading models (:mod:`silvertine_streams.demo.trading`) are pure; the desk
(:mod:`silvertine_streams.demo.desk`) runs them as ordinary handlers in a
worker; :func:`run_demo` starts the stack, a worker and a feed, and shows it.
"""

from __future__ import annotations

from silvertine_streams.demo.run import run_demo

__all__ = ["run_demo"]
