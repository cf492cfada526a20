"""Operator tools, side by side: audit, dead-letter tools, consumer-group rewind,
handler groups (list the apps following the logs, forget a retired one), and the
trail of operator actions (``actions``).

Each tool imports the engine (sinks, replay, kafka, topics), never another tool.
"""
