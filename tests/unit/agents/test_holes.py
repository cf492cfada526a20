"""Unit tests for silvertine_streams.agents.holes: a record read directly from Kafka
becomes a Faust message whose acknowledgement marks its offset in Faust's consumer.

Reading the missing range from a real broker is in tests/integration/test_hole_filler.py.
"""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message

from silvertine_streams.agents.holes import as_faust_message

TOPIC = "silvertine.order"


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TOPIC, partition=2, offset=offset, timestamp=1_700_000_000_123, timestamp_type=0,
        key=b"AAPL", value=b'{"event_type":"order"}', checksum=None, serialized_key_size=4,
        serialized_value_size=22, headers=[("origin", b"test")],
    )


class Consumer:
    """What acknowledging needs of Faust's consumer: ``ack(message)``."""

    def __init__(self) -> None:
        self.acked: list[Message] = []

    def ack(self, message: Message) -> bool:
        if message.acked:
            return False
        message.acked = True
        self.acked.append(message)
        return True


def test_the_message_carries_the_record_and_the_partition_it_belongs_to() -> None:
    tp = TP(TOPIC, 2)
    message = as_faust_message(record(41), tp)
    assert isinstance(message, ConsumerMessage)
    assert (message.topic, message.partition, message.offset) == (TOPIC, 2, 41)
    assert (message.key, message.value) == (b"AAPL", b'{"event_type":"order"}')
    assert message.headers == [("origin", b"test")]
    assert message.timestamp == 1_700_000_000.123  # Faust keeps seconds, Kafka milliseconds
    assert message.tp is tp
    assert not message.acked


def test_acknowledging_the_message_marks_its_offset_in_the_consumer_once() -> None:
    consumer = Consumer()
    messages = [as_faust_message(record(offset), TP(TOPIC, 2)) for offset in (41, 42)]
    assert messages[1].ack(consumer)  # type: ignore[arg-type]  # a stand-in consumer
    assert messages[0].ack(consumer)  # type: ignore[arg-type]
    assert not messages[0].ack(consumer)  # type: ignore[arg-type]  # a second ack is a no-op
    assert [(m.tp, m.offset) for m in consumer.acked] == [(TP(TOPIC, 2), 42), (TP(TOPIC, 2), 41)]
