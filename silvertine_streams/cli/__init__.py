"""The ``silvertine`` command: one click group, one module per command family."""

from __future__ import annotations

from silvertine_streams.cli.main import main

__all__ = ["main"]
