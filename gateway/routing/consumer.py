"""The router: one consumer group over the family topics, feeding every matching route.

Reading, delivering and committing are three loops that share one Ledger:

* the fetch loop reads records, opens a ticket per record and hands the record to each
  matching route's per-key queue. It keeps at most ``max_in_flight`` records unfinished,
  and pauses every partition when that many are;
* the routes deliver concurrently across keys and in offset order within a key, and
  settle their part of the ticket when an event is delivered, parked, dropped or skipped;
* the commit loop commits, every ``commit_interval_s``, the lowest unfinished offset of
  each partition, so a crash or a rebalance reads unfinished records again (at-least-once)
  and never skips one.

A configuration reload runs inside the fetch loop: it pauses reading, waits for the
records in flight to finish, swaps the routes and resumes. When the wait times out (a
blocked route), it abandons the unfinished records and seeks back to them, so the new
routes deliver them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from gateway.envelope import EnvelopeReader
from gateway.errors import BrokerUnavailable, ConfigError, InvalidEvent
from gateway.producer import ensure_topics
from gateway.routing.config import RoutingConfig
from gateway.routing.dlq import DeadLetterQueue, ensure_dead_letter_topics
from gateway.routing.inbound import read_record
from gateway.routing.metrics import RouterMetrics
from gateway.routing.ordering import Ledger
from gateway.routing.workers import RouteSet, SinkFactory, plan_reload, start_workers
from gateway.sinks.registry import create_sink

log = structlog.get_logger("gateway.routing.consumer")

MAX_POLL_RECORDS = 500


@dataclass(frozen=True)
class RouterOptions:
    client_id: str = "hitl-gateway-router"
    commit_interval_s: float = 1.0
    poll_timeout_ms: int = 200
    # How long unfinished work may take before it is abandoned (and read again later).
    shutdown_timeout_s: float = 15.0
    revoke_timeout_s: float = 10.0
    reload_drain_timeout_s: float = 10.0
    # Where a group without committed offsets starts; earliest misses nothing.
    auto_offset_reset: str = "earliest"


class Router:
    """Runs the routes of a RoutingConfig over its Kafka topics; ``start`` then ``stop``."""

    def __init__(
        self,
        config: RoutingConfig,
        *,
        metrics: RouterMetrics | None = None,
        options: RouterOptions | None = None,
        sink_factory: SinkFactory = create_sink,
    ) -> None:
        self.config = config
        self.metrics = metrics or RouterMetrics()
        self.options = options or RouterOptions()
        self._sink_factory = sink_factory
        self._reader = EnvelopeReader()
        self._ledger = Ledger(config.max_in_flight)
        self._routes = RouteSet()
        self._consumer: AIOKafkaConsumer | None = None
        self._dead_letters: DeadLetterQueue | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._paused = False
        self._pending_reload: tuple[RoutingConfig, asyncio.Future[None]] | None = None
        self._fetch_task: asyncio.Task[None] | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._started = False
        self._stopped = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Create the dead-letter topics, start the routes' sinks, join the group and start reading."""
        if self._started:
            return
        self._started = True
        kafka = self.config.kafka
        try:
            if kafka.create_topics:
                await ensure_topics(kafka.bootstrap_servers, kafka.topics, kafka.partitions, kafka.replication_factor)
            await self._start_consumer()
            await self._create_dead_letter_topics()
            self._dead_letters = DeadLetterQueue(kafka.bootstrap_servers, kafka.dlq_suffix, client_id=self.options.client_id + "-dlq")
            await self._dead_letters.start()
            workers = await start_workers(
                self.config.routes,
                bootstrap_servers=kafka.bootstrap_servers,
                metrics=self.metrics,
                dead_letters=self._dead_letters,
                sink_factory=self._sink_factory,
            )
        except BaseException:
            await self._close_clients()
            raise
        self._routes = RouteSet(workers)
        assert self._consumer is not None
        self._consumer.subscribe(topics=list(kafka.topics), listener=_RebalanceListener(self))
        self._fetch_task = asyncio.create_task(self._fetch_loop(), name="router fetch loop")
        self._commit_task = asyncio.create_task(self._commit_loop(), name="router commit loop")
        log.info("router_started", group_id=kafka.group_id, topics=kafka.topics, routes=self._routes.names)

    async def stop(self) -> None:
        """Stop reading, let work in flight finish (bounded), commit what finished, close everything.

        Safe to call twice.
        """
        if self._stopped or not self._started:
            return
        self._stopped = True
        self._stopping = True
        await self._end_fetch_loop()
        self._fail_pending_reload(ConfigError("the router stopped before the new configuration was applied"))

        finished = await self._ledger.wait_settled(timeout_s=self.options.shutdown_timeout_s)
        if self._commit_task is not None:
            self._commit_task.cancel()
            await asyncio.gather(self._commit_task, return_exceptions=True)
        unfinished = self._ledger.pending()
        offsets = self._ledger.abandon()
        for worker in self._routes:
            await worker.abandon_all()
        await self._commit(offsets)
        log.info("router_drained", finished_in_time=finished, abandoned=unfinished, committed=_describe(offsets))

        for worker in self._routes:
            await worker.close()
        await self._close_clients()
        log.info("router_stopped")

    @property
    def healthy(self) -> bool:
        return self._started and not self._stopping and self._fetch_task is not None and not self._fetch_task.done()

    async def wait_failed(self) -> BaseException | None:
        """Return when the fetch loop ended by itself, with the error that ended it."""
        if self._fetch_task is None:
            raise RuntimeError("the router has not been started")
        await asyncio.wait([self._fetch_task])
        return None if self._fetch_task.cancelled() else self._fetch_task.exception()

    @property
    def route_names(self) -> list[str]:
        return self._routes.names

    async def apply_config(self, config: RoutingConfig) -> None:
        """Swap in the routes of ``config`` between two polls.

        Raises ConfigError when a new route's sink does not start; the old routes then
        stay active.
        """
        if not self.healthy:
            raise ConfigError("the router is not running, so the new configuration cannot be applied")
        self._fail_pending_reload(ConfigError("a newer configuration replaced this one before it was applied"))
        applied = asyncio.get_running_loop().create_future()
        self._pending_reload = (config, applied)
        await applied

    async def _start_consumer(self) -> None:
        kafka = self.config.kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.group_id,
            client_id=self.options.client_id,
            enable_auto_commit=False,
            auto_offset_reset=self.options.auto_offset_reset,
            max_poll_records=MAX_POLL_RECORDS,
            # Picks up topics created after the router started within half a minute.
            metadata_max_age_ms=30_000,
        )
        try:
            await consumer.start()
        except KafkaError as error:
            await consumer.stop()
            raise BrokerUnavailable(
                f"cannot connect the router's consumer to Kafka at {kafka.bootstrap_servers}: {error}; "
                "check kafka.bootstrap_servers in the routing file (or GATEWAY_KAFKA_BOOTSTRAP) and that the broker runs"
            ) from error
        self._consumer = consumer

    async def _create_dead_letter_topics(self) -> None:
        """Create each missing ``<topic><dlq_suffix>`` with its source topic's partition count."""
        assert self._consumer is not None
        kafka = self.config.kafka
        brokers = len(self._consumer._client.cluster.brokers()) or 1  # noqa: SLF001
        by_partitions: dict[int, list[str]] = {}
        for topic in kafka.topics:
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                await self._consumer._client.force_metadata_update()  # noqa: SLF001
                partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                log.warning("topic_not_found", topic=topic, reason="the broker does not know it; the router reads it once it exists")
            by_partitions.setdefault(len(partitions or ()) or 1, []).append(topic)
        for partitions, topics in by_partitions.items():
            created = await ensure_dead_letter_topics(
                kafka.bootstrap_servers, topics, kafka.dlq_suffix, partitions=partitions, replication_factor=min(3, brokers)
            )
            if created:
                log.info("dead_letter_topics_created", topics=created, partitions=partitions)

    async def _end_fetch_loop(self) -> None:
        task = self._fetch_task
        if task is None or task.done():
            return
        # The loop checks _stopping after each poll; a reload in progress may take its
        # drain timeout, after which the loop is cancelled.
        done, _ = await asyncio.wait([task], timeout=self.options.reload_drain_timeout_s + 1.0)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _close_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        dead_letters, self._dead_letters = self._dead_letters, None
        if dead_letters is not None:
            await dead_letters.stop()

    # ------------------------------------------------------------------ reading

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None
        while not self._stopping:
            if self._pending_reload is not None:
                await self._reload()
                continue
            if self._ledger.room == 0:
                await self._wait_for_room()
                continue
            self._resume()
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=self.options.poll_timeout_ms, max_records=min(self._ledger.room, MAX_POLL_RECORDS)
                )
            except KafkaError as error:
                log.warning("poll_failed", reason=f"{type(error).__name__}: {error}")
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for record in records:
                    self._dispatch(record)
            self.metrics.in_flight.set(self._ledger.in_flight)
        self._pause()

    def _dispatch(self, record) -> None:
        partition = TopicPartition(record.topic, record.partition)
        try:
            inbound = read_record(record, self._reader)
        except InvalidEvent as error:
            self.metrics.invalid_records.labels(topic=record.topic).inc()
            log.warning("record_skipped", topic=record.topic, partition=record.partition, offset=record.offset, reason=str(error))
            self._ledger.open(partition, record.offset, routes=0)
            return
        workers = self._routes.matching(inbound)
        ticket = self._ledger.open(partition, record.offset, routes=len(workers))
        for worker in workers:
            worker.submit(inbound, ticket)

    async def _wait_for_room(self) -> None:
        """Backpressure: keep every partition paused until a record in flight finishes."""
        assert self._consumer is not None
        self._pause()
        self.metrics.in_flight.set(self._ledger.in_flight)
        await self._ledger.wait_for_room(timeout_s=1.0)
        # Polling while paused returns nothing but keeps this member in the group
        # (max.poll.interval.ms). A partition assigned during the poll is not paused yet,
        # hence at most one record.
        try:
            batches = await self._consumer.getmany(timeout_ms=0, max_records=1)
        except KafkaError as error:
            log.warning("poll_failed", reason=f"{type(error).__name__}: {error}")
            return
        for records in batches.values():
            for record in records:
                self._dispatch(record)

    def _pause(self) -> None:
        if self._consumer is None:
            return
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        self._paused = True

    def _resume(self) -> None:
        if not self._paused or self._consumer is None:
            return
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.resume(*assigned)
        self._paused = False

    # ------------------------------------------------------------------ committing

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.commit_interval_s)
            try:
                await self._commit(self._ledger.committable())
                self._update_lag()
            except Exception:
                # Losing the commit loop would stall every offset, so it outlives any error.
                log.exception("commit_loop_error")
            self.metrics.in_flight.set(self._ledger.in_flight)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the offsets that moved since the last commit; a failure is logged and retried next time."""
        changed = {tp: offset for tp, offset in offsets.items() if self._committed.get(tp) != offset}
        if not changed or self._consumer is None:
            return
        async with self._commit_lock:
            try:
                # A cancelled caller must not cut a commit request in half.
                await asyncio.shield(self._consumer.commit(changed))
            except KafkaError as error:
                log.warning("commit_failed", offsets=_describe(changed), reason=f"{type(error).__name__}: {error}")
                return
        self._committed.update(changed)

    def _update_lag(self) -> None:
        if self._consumer is None:
            return
        for partition in self._consumer.assignment():
            highwater = self._consumer.highwater(partition)
            position = self._ledger.committable([partition]).get(partition, self._committed.get(partition))
            if highwater is None or position is None:
                continue
            self.metrics.consumer_lag.labels(topic=partition.topic, partition=str(partition.partition)).set(
                max(0, highwater - position)
            )

    # ------------------------------------------------------------------ rebalancing

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Let the revoked partitions' work finish (bounded), commit it, abandon the rest."""
        working = [tp for tp in revoked if tp in self._ledger.partitions]
        if working:
            finished = await self._ledger.wait_settled(working, timeout_s=self.options.revoke_timeout_s)
            unfinished = self._ledger.pending(working)
            offsets = self._ledger.abandon(working)
            await self._commit(offsets)
            log.info(
                "partitions_revoked",
                partitions=_describe(offsets),
                finished_in_time=finished,
                abandoned=unfinished,
            )
        for partition in revoked:
            self._committed.pop(partition, None)
            try:
                self.metrics.consumer_lag.remove(partition.topic, str(partition.partition))
            except KeyError:
                pass

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # A fresh assignment starts unpaused; the fetch loop pauses again when full.
        self._paused = False
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    # ------------------------------------------------------------------ reloading

    async def _reload(self) -> None:
        assert self._pending_reload is not None
        config, applied = self._pending_reload
        self._pending_reload = None
        try:
            await self._swap_routes(config)
        except Exception as error:
            if not applied.done():
                applied.set_exception(error)
            return
        if not applied.done():
            applied.set_result(None)

    async def _swap_routes(self, config: RoutingConfig) -> None:
        self._warn_about_kafka_changes(config)
        plan = plan_reload(self._routes, config.routes)
        started = await start_workers(
            plan.to_start,
            bootstrap_servers=self.config.kafka.bootstrap_servers,
            metrics=self.metrics,
            dead_letters=self._dead_letters,
            sink_factory=self._sink_factory,
        )

        self._pause()
        drained = await self._ledger.wait_settled(timeout_s=self.options.reload_drain_timeout_s)
        if not drained:
            await self._rewind()

        started_by_name = {worker.name: worker for worker in started}
        self._routes = RouteSet([plan.unchanged.get(route.name) or started_by_name[route.name] for route in config.routes])
        self._ledger.max_in_flight = config.max_in_flight
        self.config = config.model_copy(update={"kafka": self.config.kafka})
        for worker in plan.retired:
            await worker.close()
            if self._routes.get(worker.name) is None:
                self.metrics.forget_route(worker.name)
        log.info(
            "config_applied",
            routes=self._routes.names,
            started=[worker.name for worker in started],
            retired=[worker.name for worker in plan.retired],
            drained=drained,
        )

    async def _rewind(self) -> None:
        """Abandon every unfinished record and seek back to it, so it is read and routed again."""
        assert self._consumer is not None
        unfinished = self._ledger.pending()
        offsets = self._ledger.abandon()
        for worker in self._routes:
            await worker.abandon_all()
        await self._commit(offsets)
        assigned = self._consumer.assignment()
        for partition, offset in offsets.items():
            if partition in assigned:
                self._consumer.seek(partition, offset)
        log.warning(
            "in_flight_rewound",
            abandoned=unfinished,
            partitions=_describe(offsets),
            reason=f"records in flight did not finish within {self.options.reload_drain_timeout_s} s of a reload",
        )

    def _warn_about_kafka_changes(self, config: RoutingConfig) -> None:
        if config.kafka != self.config.kafka:
            log.warning(
                "kafka_settings_not_reloaded",
                reason="the kafka section changed; bootstrap servers, group, topics and DLQ suffix apply after a restart",
            )

    def _fail_pending_reload(self, error: Exception) -> None:
        pending, self._pending_reload = self._pending_reload, None
        if pending is not None and not pending[1].done():
            pending[1].set_exception(error)


class _RebalanceListener(ConsumerRebalanceListener):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def on_partitions_revoked(self, revoked) -> None:
        await self._router.on_partitions_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        self._router.on_partitions_assigned(set(assigned))


def _describe(offsets: dict[TopicPartition, int]) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": offset for tp, offset in sorted(offsets.items())}
