"""The app's flow control: stream buffers are cleared only when flow resumes after a suspension."""

from __future__ import annotations

from mode.utils.queues import FlowControlQueue

from silvertine_streams.app import _FlowControl


def buffer_holding_one(flow: _FlowControl) -> FlowControlQueue[int]:
    queue: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    queue.put_nowait(1)
    return queue


def test_resuming_from_suspension_clears_the_buffers() -> None:
    flow = _FlowControl()  # starts suspended, as Faust's does
    queue = buffer_holding_one(flow)
    flow.resume()
    assert flow.is_active()
    assert queue.qsize() == 0


def test_resuming_while_flowing_keeps_what_is_buffered() -> None:
    flow = _FlowControl()
    flow.resume()
    queue = buffer_holding_one(flow)
    flow.resume()  # Faust's recovery does this after seeking to the committed offsets
    assert flow.is_active()
    assert queue.qsize() == 1


def test_a_new_suspension_makes_the_next_resume_clear_again() -> None:
    flow = _FlowControl()
    flow.resume()
    queue = buffer_holding_one(flow)
    flow.suspend()
    assert not flow.is_active()
    flow.resume()
    assert queue.qsize() == 0
