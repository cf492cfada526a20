"""A Quix Streams 3 app: Kafka → JSON deserialiser → batching sink doing pipelined XADD.

The peer the ``single`` scenario measures beside ``silvertine worker`` and the raw
floor (issue #11). Quix Streams pins older pydantic and confluent-kafka than the
product, so this script runs in a venv of its own (``bench/.venv-quix``, built by
:mod:`bench.peers`) and imports nothing from ``bench`` or ``silvertine_streams``.

What it does is what a Quix user would write for "events from a topic into a Redis
stream": an ``Application`` in a consumer group of its own, reading from the
earliest offset, a ``StreamingDataFrame`` with Quix's ``json`` value
deserialiser, and a ``BatchingSink`` whose ``write`` XADDs each item of the
checkpoint's batch (its value serialised back to JSON) in one pipelined round
trip, as the raw floor does per fetch. No validation, dedupe or sequencing:
Quix offers none of them out of the box, so this is Quix's floor.

Quix flushes sinks at each checkpoint (``commit_interval``, 5 s by default); the
bench uses ``BENCH_QUIX_COMMIT_S`` (0.1 s): with the default, the last
checkpoint alone would take longer than the whole run of the other variants.

Environment: ``BENCH_KAFKA_BOOTSTRAP`` (``host:port,...``), ``BENCH_REDIS_URL``, ``BENCH_TOPIC``,
``BENCH_STREAM``, ``BENCH_GROUP``, ``BENCH_MARK_FILE`` (``time.time()`` of the
first consumed message), ``BENCH_QUIX_COMMIT_S``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import redis
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch


class RedisStreamSink(BatchingSink):
    """XADD every item of a checkpoint's batch to one stream, one pipelined round trip."""

    def __init__(self, url: str, stream: str) -> None:
        super().__init__()
        self._url, self._stream = url, stream
        self._client: redis.Redis | None = None

    def setup(self) -> None:
        self._client = redis.Redis.from_url(self._url)
        self._client.ping()

    def write(self, batch: SinkBatch) -> None:
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        dumps, stream = json.dumps, self._stream
        for item in batch:
            pipe.xadd(stream, {"event": dumps(item.value, separators=(",", ":"))})
        pipe.execute()


def main() -> None:
    env = os.environ
    mark = Path(env["BENCH_MARK_FILE"])
    marked = [False]

    def first_message(value: Any) -> None:
        if not marked[0]:
            marked[0] = True
            tmp = mark.with_suffix(".tmp")
            tmp.write_text(repr(time.time()))
            os.replace(tmp, mark)

    app = Application(
        broker_address=env["BENCH_KAFKA_BOOTSTRAP"],
        consumer_group=env["BENCH_GROUP"],
        auto_offset_reset="earliest",
        commit_interval=float(env.get("BENCH_QUIX_COMMIT_S", "0.1")),
        use_changelog_topics=False,
        auto_create_topics=False,
        loglevel=logging.WARNING,
    )
    topic = app.topic(env["BENCH_TOPIC"], value_deserializer="json")
    sdf = app.dataframe(topic)
    sdf = sdf.update(first_message)
    sdf.sink(RedisStreamSink(env["BENCH_REDIS_URL"], env["BENCH_STREAM"]))
    print(f"bench: quixstreams app on {env['BENCH_TOPIC']} → {env['BENCH_STREAM']}", flush=True)
    app.run()


if __name__ == "__main__":
    main()
