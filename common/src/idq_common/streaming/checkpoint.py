"""A stage's progress, stored as committed Kafka offsets on the features topic.

A stage reads features by GPS span (seek by time), so its progress is a GPS time:
the start of the next stride to process. We keep it where Kafka keeps consumer
progress: the group's committed offsets, one per partition of the features topic,
each at the first message at or after ``next_gps - pad`` (so consumer-lag tools
read something meaningful) with the exact GPS time in the offset *metadata*.
Committing happens only after the stride's outputs are durably produced (at-least-once).

Shared work (``shared=True``, evaluate and timeseries): replicas of a stage join the
stage's consumer group on the features topic and Kafka assigns each its partitions.
Stride ``k`` belongs to partition ``k % P``; a replica processes the strides of the
partitions it holds (it still reads every feature it needs, by time) and commits its
progress on those partitions only. With one replica it holds every partition and does
every stride. The subscription is only for the assignment: the partitions are paused,
no message is read through it.

Block-partitioned topic (``[kafka] partitioner = "block"``, ``block_strides`` set):
stride ``k`` belongs to partition ``(k // block_strides) % P`` instead -- the partition
its block of data lives in -- so a replica's strides are whole blocks of its own
partitions and its reader (:mod:`idq_common.streaming.block_source`) needs only those
partitions plus the pad at block edges (docs/SCALE_OUT.md).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from idq_common.exceptions import BrokerError
from idq_common.gpstime import gps_to_kafka_ms
from idq_common.io.kafka.clients import committed_offsets

log = logging.getLogger(__name__)


def stride_owner(stride_index: int, partitions: int, block_strides: int | None = None) -> int:
    """The partition whose holder does stride number ``stride_index``.

    ``stride_index % partitions``, or by block (``(stride_index // block_strides) %
    partitions``) on a block-partitioned topic: the partition the stride's data is in.
    """
    if block_strides is None:
        return stride_index % partitions
    return (stride_index // block_strides) % partitions


class Checkpoint:
    """Load and save a stage's next stride start for one consumer group.

    Parameters
    ----------
    consumer_config : dict
        librdkafka configuration including ``group.id``.
    topic : str
        The features topic whose offsets carry the checkpoint.
    timeout : float
        Seconds allowed for broker round trips.
    shared : bool
        Join the consumer group and share the strides by partition (see the module).
    block_strides : int, optional
        Strides per block of a block-partitioned topic: ownership by block.
    settle : float
        Shared: after the first assignment, wait until the group has not changed for
        this many seconds (bounded by ``3 * timeout``). Replicas started together then
        begin with the work already split: the first one to join otherwise holds every
        partition and works through the others' strides until they join.
    replicas : int, optional
        Shared: how many replicas the group will have. Given, the settling ends as soon
        as this replica holds at most its share of the partitions (``ceil(P /
        replicas)``) instead of after ``settle`` quiet seconds: at once for one replica.
    """

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topic: str,
        timeout: float = 10.0,
        shared: bool = False,
        block_strides: int | None = None,
        settle: float = 0.0,
        replicas: int | None = None,
    ) -> None:
        if block_strides is not None and block_strides < 1:
            raise ValueError(f"block_strides must be >= 1, got {block_strides}")
        self.block_strides = block_strides
        cfg = dict(consumer_config)
        cfg.setdefault("enable.auto.commit", False)
        if shared:
            # a replica killed with -9 never leaves the group: until its session times
            # out every rebalance waits for it (and each restart that gave up waiting
            # added one more such member). The broker's minimum (6 s) evicts it quickly;
            # heartbeats come from librdkafka's own thread, so a long stride is no risk.
            cfg.setdefault("session.timeout.ms", 6000)
            cfg.setdefault("heartbeat.interval.ms", 1500)
        self._consumer = Consumer(cfg)
        self._topic = topic
        self._timeout = timeout
        self._partitions = self._list_partitions()
        self.shared = shared
        #: partitions whose strides this process does (all of them unless shared)
        self.owned: set[int] = set() if shared else set(self._partitions)
        self._reassigned = False
        #: committed next-stride GPS per partition, as last loaded (see :meth:`owns`)
        self._done: dict[int, float] = {}
        #: skip strides before their partition's committed progress; off for a run
        #: that reprocesses on purpose (``--from-start``: the old progress is stale)
        self.skip_done = True
        if shared:
            self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            deadline = time.monotonic() + 3 * self._timeout
            while not self._reassigned and time.monotonic() < deadline:
                # short polls: the assignment callback runs inside a poll, which then
                # still waits out its timeout (0.5 s was half a second of every start)
                self.serve(0.05)
            if not self._reassigned:
                self._consumer.close()  # leave the group: a dangling member stalls it
                raise BrokerError(f"no partition assignment from the group on {topic!r}")
            self._settle(settle, deadline, replicas)

    # -- shared work --------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.pause(partitions)  # membership only: the data is read by time elsewhere
        self.owned = {tp.partition for tp in partitions}
        self._reassigned = True
        log.info(
            "%s: this replica now does the strides of partitions %s of %d",
            self._topic,
            sorted(self.owned),
            len(self._partitions),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.owned -= {tp.partition for tp in partitions}
        self._reassigned = True

    def _settle(self, settle: float, deadline: float, replicas: int | None = None) -> None:
        """Serve the group until it has been stable (and we hold something) ``settle`` s,
        or, ``replicas`` given, until we hold at most our share of the partitions."""
        share = None if replicas is None else math.ceil(len(self._partitions) / replicas)
        quiet_from = time.monotonic()
        self._reassigned = False
        while time.monotonic() < deadline:
            if share is not None and self.owned and len(self.owned) <= share:
                break
            if share is None and time.monotonic() - quiet_from >= settle and self.owned:
                break
            self.serve(0.2)
            if self._reassigned:  # a member joined or left: wait for quiet again
                self._reassigned = False
                quiet_from = time.monotonic()
        self._reassigned = True

    def serve(self, timeout: float = 0.0) -> None:
        """Keep the group membership alive and handle rebalances (call every loop turn)."""
        if self.shared:
            msg = self._consumer.poll(timeout)
            if msg is not None and msg.error() is None:  # paused: should not happen
                log.debug("ignoring a message read through the membership consumer")

    def reassigned(self) -> bool:
        """True once after each change of the owned partitions."""
        changed, self._reassigned = self._reassigned, False
        return changed

    def owns(self, stride_index: int, start: float | None = None) -> bool:
        """Whether stride number ``stride_index`` (start // stride) is this replica's.

        With ``start`` (the stride's GPS start), a stride before its partition's committed
        progress as last loaded is not: whoever held the partition did it already (a
        replica taking a partition over resumes from the earliest progress of all it
        holds, and would otherwise redo the others' strides in between).
        """
        partition = stride_owner(stride_index, len(self._partitions), self.block_strides)
        if partition not in self.owned:
            return False
        if start is None or not self.skip_done:
            return True
        return start >= self._done.get(partition, -math.inf)

    def done(self) -> dict[int, float]:
        """Committed progress per partition as last loaded ({} with ``skip_done`` off)."""
        return dict(self._done) if self.skip_done else {}

    @property
    def partitions(self) -> list[int]:
        """Every partition of the features topic."""
        return list(self._partitions)

    def _list_partitions(self) -> list[int]:
        try:
            md = self._consumer.list_topics(self._topic, timeout=self._timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot reach Kafka for topic {self._topic!r}: {exc}") from exc
        topic = md.topics.get(self._topic)
        if topic is None or topic.error is not None:
            raise BrokerError(f"topic {self._topic!r} is not available: {topic and topic.error}")
        return sorted(topic.partitions)

    def load(self) -> float | None:
        """The committed next-stride GPS time of the owned partitions (the earliest), or None."""
        meta = self.load_metadata()
        return None if meta is None else float(meta["next_gps"])

    def load_metadata(self) -> dict[str, Any] | None:
        """The committed metadata with the earliest ``next_gps`` (with any ``extra``), or None."""
        tps = [TopicPartition(self._topic, p) for p in sorted(self.owned)]
        if not tps:
            return None
        try:
            committed = committed_offsets(self._consumer, tps, self._timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot read committed offsets: {exc}") from exc
        values: list[dict[str, Any]] = []
        for tp in committed:
            if tp.metadata:
                try:
                    meta = json.loads(tp.metadata)
                    meta["next_gps"] = float(meta["next_gps"])
                    values.append(meta)
                    self._done[tp.partition] = meta["next_gps"]
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring unreadable checkpoint metadata %r", tp.metadata)
        return min(values, key=lambda m: m["next_gps"]) if values else None

    def save(self, next_gps: float, pad: float = 0.0, extra: dict[str, Any] | None = None) -> None:
        """Commit ``next_gps`` synchronously (raises BrokerError if the commit fails).

        ``extra`` (small JSON, e.g. train's state artifact) is committed with it, in
        the same offset metadata, so the two can never disagree.
        """
        ms = gps_to_kafka_ms(next_gps - pad)
        query = [TopicPartition(self._topic, p, ms) for p in sorted(self.owned)]
        if not query:
            return
        try:
            found = self._consumer.offsets_for_times(query, timeout=self._timeout)
        except KafkaException as exc:
            raise BrokerError(f"offsets_for_times failed: {exc}") from exc
        meta = json.dumps({**(extra or {}), "next_gps": next_gps})
        offsets = []
        for tp in found:
            offset = tp.offset
            if offset < 0:  # no message at or after that time yet: the end of the partition
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, tp.partition), timeout=self._timeout
                )
                offset = high
            offsets.append(TopicPartition(self._topic, tp.partition, offset, metadata=meta))
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise BrokerError(f"commit of checkpoint {next_gps} failed: {exc}") from exc

    def lag(self) -> int:
        """Messages between the committed offsets and the high watermarks, summed."""
        tps = [TopicPartition(self._topic, p) for p in sorted(self.owned)]
        total = 0
        for tp in committed_offsets(self._consumer, tps, self._timeout):
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, tp.partition), timeout=self._timeout, cached=False
            )
            total += max(0, high - max(tp.offset, 0))
        return total

    def close(self) -> None:
        """Close the underlying consumer."""
        self._consumer.close()
