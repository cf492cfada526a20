"""Operator tools, side by side: audit, dead-letter tools, consumer-group rewind.

Each tool imports the engine (sinks, replay, kafka, topics), never another tool.
"""
