"""The per-message loop of one event type's Faust agent.

For each Kafka message: make sure it is in turn (fill an offset hole first),
let the critical lane go first, run the message through the pipeline, save the
partition's sequence marks. The pipeline decides and writes; this loop only
feeds it and keeps Faust's bookkeeping.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from silvertine_streams.agents.holes import HoleFiller, as_faust_message
from silvertine_streams.agents.lanes import LaneController
from silvertine_streams.agents.pipeline import EventPipeline, PartitionState
from silvertine_streams.domain.offsets import OffsetAction
from silvertine_streams.observability.memory import MemoryGuard
from silvertine_streams.observability.metrics import MEMORY_THROTTLED, OFFSET_HOLES, TypeMetrics
from silvertine_streams.tables import save_marks, stored_marks

if TYPE_CHECKING:
    from silvertine_streams.app import SilvertineApp

log = logging.getLogger(__name__)


def pipeline_agent(
    app: SilvertineApp,
    pipeline: EventPipeline,
    table: Any,
    controller: LaneController,
    critical: bool,
    memory: MemoryGuard,
    filler: HoleFiller,
) -> Any:
    """Return the agent function that feeds ``pipeline`` from its topic's stream."""
    metrics = TypeMetrics.for_type(pipeline.event_type.value)

    async def agent(stream: Any) -> None:
        if critical:
            controller.watch(getattr(stream.channel, "queue", None))
        # Manual acks: a message is acknowledged only when all its events are
        # logged, including those a reorder window held back.
        async for event in stream.noack().events():
            message = event.message
            state = pipeline.partition(
                message.partition, partial(stored_marks, table, message.partition),
                partial(_committed_offset, app, message.tp), message.tp)
            if not await _in_turn(app, pipeline, state, event, filler):
                continue
            if critical:
                controller.in_flight += 1
            else:
                await controller.yield_to_critical()
            if memory.should_throttle():
                await _relieve_memory()
            highwater = app.consumer.highwater(message.tp) or 0
            lag = max(0, highwater - message.offset - 1)
            try:
                async with pipeline.lock:
                    outcome = await pipeline.process(
                        event.value, state, message.partition, message.offset, event.ack,
                        message.timestamp, lag)
            finally:
                if critical:
                    controller.in_flight -= 1
            # Written on every message that moved a mark (expiries by the timer
            # cannot write: Faust ties table writes to the current message).
            if outcome.sequence_changes or state.unsaved:
                save_marks(table, message.partition, state.tracker.snapshot())
                state.unsaved = False
            metrics.lag.set(lag)
            metrics.reorder_held.set(outcome.held)

    name = f"pipeline_{pipeline.event_type.value}"
    agent.__name__ = agent.__qualname__ = name
    return agent


async def _in_turn(
    app: SilvertineApp, pipeline: EventPipeline, state: PartitionState, event: Any,
    filler: HoleFiller,
) -> bool:
    """Whether to process ``event``; fill a hole before it first.

    A redelivery of a processed message is acknowledged and dropped. A message
    that arrives before its predecessors (a hole) is processed after them: the
    missing offsets are read directly (:mod:`silvertine_streams.agents.holes`).
    If they cannot be read, the message is processed anyway and the consumer
    never commits past the hole (``app.py``), so the missing messages are read
    again after the next restart rather than lost.
    """
    message = event.message
    action = state.offsets.check(message.offset)
    if action is OffsetAction.PROCESS:
        return True
    if action is OffsetAction.SKIP:
        event.ack()
        return False
    OFFSET_HOLES.inc()
    start = state.offsets.next_offset
    assert start is not None
    log.warning("%s delivered offset %s before %s; reading the hole directly",
                message.tp, message.offset, start)
    records = await filler.fetch(message.tp.topic, message.tp.partition, start,
                                 message.offset)
    for record in records:
        filled = as_faust_message(record, message.tp)
        async with pipeline.lock:
            await pipeline.process(record.value, state, record.partition, record.offset,
                                   partial(filled.ack, app.consumer),
                                   record.timestamp / 1000.0, 0)
    if len(records) < message.offset - start:
        log.error("%s: read %s of the %s missing messages; commits stay before the hole",
                  message.tp, len(records), message.offset - start)
    state.offsets.next_offset = message.offset + 1
    return True


def _committed_offset(app: SilvertineApp, tp: Any) -> int | None:
    """The offset the group resumes this partition at, as Faust knows it (None: unknown)."""
    # Faust records it when it seeks to the committed offsets (a private dict).
    committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
    return int(committed) if committed is not None else None


async def _relieve_memory() -> None:
    """Near the memory limit: collect garbage and slow intake a little (never stop)."""
    MEMORY_THROTTLED.inc()
    gc.collect()
    await asyncio.sleep(0.01)
