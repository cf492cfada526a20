"""The Faust app: ``create_app(settings)``, and ``app`` for ``faust -A silvertine_streams.app``.

Some of Faust's defaults do not suit a trading engine on our stack, so the app
changes them here, in one place:

* Faust hard-codes the consumer's fetch wait to 1,500 ms, which shows up as
  ~1.2 s latency at light load on Tansu; we pass ``SILVERTINE_FETCH_WAIT_MS``.
* Faust declares only its internal topics, and Tansu auto-creates any other
  topic with 4 partitions on first produce: we declare ours before the worker
  subscribes, and refuse to run when an existing one has another partition count.
* Faust clears every stream buffer whenever flow control is resumed, also when
  it was not suspended: at the end of a recovery that dropped messages the
  consumer had already fetched past (:class:`_FlowControl`).
* aiokafka stops fetching from a broker for 100 ms whenever a fetched partition
  is not drained, and Faust never drains its own tables' changelog partitions
  after recovery: every table write stalled the worker's fetches
  (:class:`_ConsumerThread`).
* Faust's per-message machinery caps a worker near 5k messages/s: our event
  topics are not read through Faust streams but a fetched batch at a time
  (:class:`_Consumer`, :mod:`silvertine_streams.agents.fetch_loop`).
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.utils.functional import consecutive_numbers
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from silvertine_streams.handlers import HandlerRegistry
from silvertine_streams.kafka.admin import ensure_topics
from silvertine_streams.kafka.clients import client_id, compression_type, kafka_credentials
from silvertine_streams.settings import FAUST_ENV_PREFIX, Settings, load_settings

if TYPE_CHECKING:
    from silvertine_streams.agents.batch_loop import BatchLoop
    from silvertine_streams.agents.intake import Intake
    from silvertine_streams.agents.pipeline import EventPipeline

log = logging.getLogger(__name__)



class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with our fetch wait and without aiokafka's prefetch backoff.

    aiokafka holds back *every* fetch to a broker for ``prefetch_backoff``
    (100 ms, not configurable through Faust) after it fetched records of a
    partition that the application has not drained yet. Faust drains only its
    active partitions; the changelog partitions of its own tables stay assigned
    after recovery and are never drained, so each table write (one per message)
    came back as fetched records that stalled the worker's fetches for 100 ms.
    Measured with the priority benchmark: orders of a worker group of their own
    under a market-data flood had p99 76-110 ms with the backoff and ~30 ms
    without it. Without the backoff, aiokafka fetches the other partitions at
    once and leaves an undrained one out of the next request (as the Java client
    does); each partition still holds at most one fetched batch.
    """

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        assert isinstance(app, SilvertineApp)
        # aiokafka reads this attribute when it builds its fetcher in start().
        consumer._fetch_max_wait_ms = app.settings.fetch_wait_ms
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        # The fetcher exists once the consumer started; its results read this
        # attribute when they are created.
        self._ensure_consumer()._fetcher._prefetch_backoff = 0.0


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, feeding our batch loops, minus two ways it can commit past
    unprocessed messages.

    Its fetch loop hands each fetch's records of our event topics to the
    worker's batch loops (:mod:`silvertine_streams.agents.fetch_loop`); before
    each offset commit it has them save their sequence marks, and a revoke
    voids their batches' pending acknowledgements.

    Faust treats a jump in a partition's offsets as a "gap" (right for compacted
    or transactional topics) and commits past it; after a rebalance it can
    deliver a prefetched later offset first, so the messages in between were
    then never processed and are lost. Its head check also lets the first
    offset after the committed one be skipped (``> 1`` where ``> 0`` is meant).
    Our topics have contiguous offsets: a commit never passes an offset that
    was not acknowledged, and the batch loops re-read what was skipped
    (:mod:`silvertine_streams.domain.offsets`).
    """

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        from silvertine_streams.agents.fetch_loop import drain

        intake = getattr(self.app, "intake", None)
        if intake is None:  # an app without batch loops reads through Faust streams
            await super()._drain_messages(fetcher)
        else:
            await drain(self, fetcher, intake)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        intake = getattr(self.app, "intake", None)
        if intake is not None:
            # Before Faust forgets the partitions' acks and committed offsets.
            intake.revoke(revoked)
        await super().on_partitions_revoked(revoked)

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        # Sequence marks go to the table's changelog before the offsets they cover
        # are committed; Faust flushes its producer before it commits.
        for loop in getattr(self.app, "batch_loops", ()):
            loop.save_marks()
        return bool(await super()._commit_offsets(offsets, start_new_transaction))

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning("offsets %s..%s of %s arrived out of turn; not treated as a gap",
                    offset_from, offset_to - 1, tp)

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        if not acked:
            return None
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None:
            # Acks of offsets below the committed one are redeliveries: forget them.
            while acked and acked[0] < committed:
                self._acked_index[tp].discard(acked.pop(0))
            if not acked or acked[0] != committed:
                return None  # the next offset to commit has not been acknowledged
        batch = next(consecutive_numbers(acked))
        del acked[: len(batch)]
        self._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1


class _FlowControl(FlowControlEvent):
    """Faust's flow control of stream buffers, clearing them only when flow was suspended.

    Clearing on resume is right after a suspension (a rebalance): what the
    buffers hold was fetched for the old assignment and is fetched again from
    the committed offsets. But Faust's recovery resumes flow for the changelogs,
    then resumes the stream partitions, seeks them to the committed offsets and
    resumes flow once more, clearing what was fetched while the seek was
    awaited. For a partition already sought, the consumer's position had passed
    those messages and nothing fetched them again; nothing noticed either, as
    they were the partition's last messages (a backlog produced while no worker
    ran) and no later offset revealed a hole. Kept, they are processed; copies
    fetched again after the seek are redeliveries that the offset guard skips.
    """

    def resume(self) -> None:
        """Resume flow into the buffers; clear them only if flow was suspended."""
        if self.is_active():
            return  # nothing was held back, so nothing buffered is stale
        super().resume()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class SilvertineApp(faust.App):
    """A Faust app that carries our :class:`Settings` and declares our topics first.

    Attributes:
        settings: the worker's settings.
        bus: the handler registry ``SILVERTINE_HANDLERS`` setups subscribe on.
        pipelines: the pipeline of each consumed event type, by Kafka topic.
        intake: where the consumer delivers our topics' records (None: Faust streams).
        batch_loops: the batch loop of each consumed event type.
        batch_topics: our event topics, subscribed without a Faust agent.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.bus = HandlerRegistry()
        self.pipelines: dict[str, EventPipeline] = {}
        self.intake: Intake | None = None
        self.batch_loops: list[BatchLoop] = []
        self.batch_topics: list[Any] = []
        super().__init__(settings.app_id, **kwargs)

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """Flow control of the stream buffers (see :class:`_FlowControl`)."""
        return _FlowControl(loop=self.loop)

    async def on_first_start(self) -> None:
        """Declare and check every topic before the consumer subscribes."""
        await ensure_topics(self.settings)
        await super().on_first_start()
        tune_gc()

    async def on_start(self) -> None:
        """Subscribe our event topics: no Faust agent iterates them, which would."""
        await super().on_start()
        for topic in self.batch_topics:
            self.topics.add(topic)


def tune_gc() -> None:
    """Keep Python's cyclic GC off the hot path.

    Every envelope allocates thousands of short-lived objects (events, records,
    tuples); with the default thresholds the collector ran full collections of
    80-180 ms several times per 200k events (measured by the benchmark: 2-4 µs
    per event). Start-up objects are frozen out of collection, and the
    young-generation threshold is raised so collections are rarer and cheaper.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def create_app(settings: Settings) -> SilvertineApp:
    """Build the Faust app from ``settings``, with one agent per event type.

    ``settings.kafka_url`` and ``settings.redis_url`` must be set (the CLI fills
    them from the embedded stack when the user did not).
    """
    from silvertine_streams.agents import register_agents

    if settings.kafka_url is None or settings.redis_url is None:
        raise ValueError("create_app needs settings with kafka_url and redis_url filled in")
    datadir = settings.data_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust fails on start when it is missing
    app = SilvertineApp(
        settings,
        broker=settings.kafka_url,
        # Security comes from the one seam every other client uses too.
        broker_credentials=kafka_credentials(settings),
        broker_client_id=client_id("worker"),
        store=settings.table_store,
        datadir=str(datadir),
        env_prefix=FAUST_ENV_PREFIX,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # Tansu joins a group only after the rebalance timeout (DESIGN §4).
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(1.0, settings.session_timeout_s / 3),
        # A new consumer group starts at the beginning: nothing produced is skipped.
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_compression_type=compression_type(settings),
        # Faust listens on web_bind (default 0.0.0.0); web_host only names it in URLs.
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        logging_config=None,
    )
    register_agents(app)
    return app


def __getattr__(name: str) -> Any:
    """Build the conventional module-level ``app`` on first access, not at import."""
    if name == "app":
        from silvertine_streams.embedded import resolve_settings_with_stack

        app = create_app(resolve_settings_with_stack(load_settings()))
        globals()["app"] = app
        return app
    raise AttributeError(name)
