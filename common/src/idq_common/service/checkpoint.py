"""A stage's progress, stored as committed Kafka offsets on the features topic.

A stage reads features by GPS span (seek by time), so its progress is a GPS time:
the start of the next stride to process. We keep it where Kafka keeps consumer
progress: the group's committed offsets, one per partition of the features topic,
each at the first message at or after ``next_gps - pad`` (so consumer-lag tools
read something meaningful) with the exact GPS time in the offset *metadata*.
Committing happens only after the stride's outputs are durably produced (at-least-once).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from idq_common.exceptions import BrokerError
from idq_common.gpstime import gps_to_kafka_ms

log = logging.getLogger(__name__)


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
    """

    def __init__(self, consumer_config: dict[str, Any], topic: str, timeout: float = 10.0) -> None:
        cfg = dict(consumer_config)
        cfg.setdefault("enable.auto.commit", False)
        self._consumer = Consumer(cfg)
        self._topic = topic
        self._timeout = timeout
        self._partitions = self._list_partitions()

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
        """Return the committed next-stride GPS time, or None if never committed."""
        tps = [TopicPartition(self._topic, p) for p in self._partitions]
        try:
            committed = self._consumer.committed(tps, timeout=self._timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot read committed offsets: {exc}") from exc
        values = []
        for tp in committed:
            if tp.metadata:
                try:
                    values.append(float(json.loads(tp.metadata)["next_gps"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring unreadable checkpoint metadata %r", tp.metadata)
        return min(values) if values else None

    def save(self, next_gps: float, pad: float = 0.0) -> None:
        """Commit ``next_gps`` synchronously (raises BrokerError if the commit fails)."""
        ms = gps_to_kafka_ms(next_gps - pad)
        query = [TopicPartition(self._topic, p, ms) for p in self._partitions]
        try:
            found = self._consumer.offsets_for_times(query, timeout=self._timeout)
        except KafkaException as exc:
            raise BrokerError(f"offsets_for_times failed: {exc}") from exc
        meta = json.dumps({"next_gps": next_gps})
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
        tps = [TopicPartition(self._topic, p) for p in self._partitions]
        total = 0
        for tp in self._consumer.committed(tps, timeout=self._timeout):
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, tp.partition), timeout=self._timeout, cached=False
            )
            total += max(0, high - max(tp.offset, 0))
        return total

    def close(self) -> None:
        """Close the underlying consumer."""
        self._consumer.close()
