"""Small producer/consumer helpers around confluent_kafka, shared by the stages.

The librdkafka dictionaries come from :class:`idq_common.io.kafka.settings.KafkaSettings`
(``producer_config()`` / ``consumer_config(group_id)``); these helpers add what every
caller would otherwise rewrite: delivery-error checking, waiting for a group
assignment without losing the first messages, and seeking by GPS time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from idq_common.exceptions import BrokerError
from idq_common.gpstime import gps_to_kafka_ms

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]] | Mapping[str, bytes] | None


def make_producer(config: Mapping[str, Any]) -> Producer:
    """A ``confluent_kafka.Producer`` from a librdkafka dictionary."""
    return Producer(dict(config))


def make_consumer(config: Mapping[str, Any]) -> Consumer:
    """A ``confluent_kafka.Consumer`` from a librdkafka dictionary (needs ``group.id``)."""
    if "group.id" not in config:
        raise BrokerError("a consumer config needs 'group.id'")
    return Consumer(dict(config))


class DeliveryTracker:
    """An ``on_delivery`` callback that remembers failures, for batched produce calls.

    Use one tracker for a batch: ``producer.produce(..., on_delivery=tracker)`` for each
    message, then :func:`flush` with the tracker, which raises on any failure.
    """

    def __init__(self) -> None:
        self.delivered: list[Message] = []
        self.failed: list[tuple[KafkaError, Message]] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed.append((err, msg))
        else:
            self.delivered.append(msg)

    def raise_if_failed(self) -> None:
        """Raise :class:`BrokerError` naming the first failures, if any."""
        if self.failed:
            first = "; ".join(f"{m.topic()}: {e}" for e, m in self.failed[:3])
            raise BrokerError(f"{len(self.failed)} message(s) were not delivered: {first}")


def flush(
    producer: Producer, timeout: float = 30.0, tracker: DeliveryTracker | None = None
) -> None:
    """Flush ``producer`` and raise if messages remain or (with ``tracker``) failed.

    Raises
    ------
    BrokerError
        Messages still queued after ``timeout`` seconds, or a delivery failed.
    """
    remaining = producer.flush(timeout)
    if remaining:
        raise BrokerError(f"{remaining} message(s) still queued after flushing for {timeout} s")
    if tracker is not None:
        tracker.raise_if_failed()


def produce_sync(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | str | None = None,
    *,
    timestamp_ms: int | None = None,
    partition: int | None = None,
    headers: Headers = None,
    timeout: float = 30.0,
) -> Message:
    """Produce one message and wait for its delivery report.

    Parameters
    ----------
    timestamp_ms : int, optional
        Message timestamp, Unix milliseconds (``gpstime.gps_to_kafka_ms(start)``);
        default: the producer's wall clock.

    Returns
    -------
    Message
        The delivered message (``partition()``, ``offset()`` set).

    Raises
    ------
    BrokerError
        The broker refused it or it was not delivered within ``timeout``.
    """
    tracker = DeliveryTracker()
    kwargs: dict[str, Any] = {"key": key, "on_delivery": tracker}
    if timestamp_ms is not None:
        kwargs["timestamp"] = int(timestamp_ms)
    if partition is not None:
        kwargs["partition"] = partition
    if headers is not None:
        kwargs["headers"] = headers
    try:
        producer.produce(topic, value, **kwargs)
    except (KafkaException, BufferError) as exc:
        raise BrokerError(f"producing to {topic} failed: {exc}") from exc
    flush(producer, timeout, tracker)
    if not tracker.delivered:
        raise BrokerError(f"no delivery report from {topic} within {timeout} s")
    return tracker.delivered[0]


def wait_for_assignment(consumer: Consumer, timeout: float = 30.0) -> list[TopicPartition]:
    """Poll a subscribed consumer until the group gives it partitions.

    A message that arrives while waiting is not lost: the consumer is rewound to it,
    so the caller's next ``poll`` returns it again.

    Raises
    ------
    BrokerError
        No assignment within ``timeout`` seconds, or a fatal consumer error.
    """
    deadline = time.monotonic() + timeout
    while True:
        msg = consumer.poll(0.1)
        if msg is not None:
            err = msg.error()
            if err is not None and err.fatal():
                raise BrokerError(f"consumer error while waiting for assignment: {err}")
            topic, part, offset = msg.topic(), msg.partition(), msg.offset()
            if err is None and topic is not None and part is not None and offset is not None:
                # a message implies an assignment: rewind so the caller's poll sees it
                consumer.seek(TopicPartition(topic, part, offset))
        assignment = consumer.assignment()
        if assignment:
            return list(assignment)
        if time.monotonic() > deadline:
            raise BrokerError(f"no partitions assigned within {timeout} s")


def committed_offsets(
    consumer: Consumer, tps: list[TopicPartition], timeout: float = 10.0, retry_for: float = 60.0
) -> list[TopicPartition]:
    """The group's committed offsets of ``tps``, retried while the coordinator is not ready.

    A freshly started broker (or a group's first join) answers NOT_COORDINATOR or
    COORDINATOR_LOAD_IN_PROGRESS for a while; a stage that gave up there failed to start
    (seen in ``idq demo``). Other errors, and transient ones after ``retry_for`` s,
    raise :class:`confluent_kafka.KafkaException` as ``committed`` does.
    """
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return list(consumer.committed(tps, timeout=timeout))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            transient = isinstance(err, KafkaError) and (
                err.retriable()
                or err.code()
                in (
                    KafkaError.NOT_COORDINATOR,
                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                    KafkaError.COORDINATOR_NOT_AVAILABLE,
                )
            )
            if not transient or time.monotonic() > deadline:
                raise
            log.info("committed offsets not available yet (%s): retrying", err)
            time.sleep(0.5)


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic`` (raises :class:`BrokerError` if it does not exist)."""
    meta = consumer.list_topics(topic, timeout=timeout)
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise BrokerError(f"topic {topic} not found: {info.error if info else 'no metadata'}")
    return sorted(info.partitions)


def seek_to_time(
    consumer: Consumer, topic: str, gps: float, timeout: float = 10.0
) -> list[TopicPartition]:
    """Position ``consumer`` on ``topic`` at the first message at or after GPS ``gps``.

    Uses ``offsets_for_times`` with :func:`idq_common.gpstime.gps_to_kafka_ms` (message
    timestamps are the Unix ms of the data). Partitions without such a message are
    positioned at their end. If the consumer already holds partitions of ``topic``
    (group subscription, after :func:`wait_for_assignment`) those are seeked; otherwise
    all partitions of ``topic`` are assigned manually.

    Returns
    -------
    list of TopicPartition
        The partitions and the offsets they were positioned at.
    """
    ms = gps_to_kafka_ms(gps)
    held = [tp.partition for tp in consumer.assignment() if tp.topic == topic]
    parts = held or partitions_of(consumer, topic, timeout)
    query = [TopicPartition(topic, p, ms) for p in parts]
    try:
        found = consumer.offsets_for_times(query, timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"offsets_for_times on {topic} failed: {exc}") from exc
    targets = []
    for tp in found:
        if tp.error is not None:
            raise BrokerError(f"offsets_for_times on {topic}[{tp.partition}]: {tp.error}")
        offset = tp.offset if tp.offset >= 0 else OFFSET_END
        targets.append(TopicPartition(topic, tp.partition, offset))
    if held:
        for tp in targets:
            consumer.seek(tp)
    else:
        consumer.assign(targets)
    return targets


def poll_messages(consumer: Consumer, max_messages: int, timeout: float = 30.0) -> list[Message]:
    """Poll until ``max_messages`` data messages arrived or ``timeout`` passed.

    Partition-EOF and other non-fatal errors are skipped; a fatal one raises
    :class:`BrokerError`.
    """
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < max_messages:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        msg = consumer.poll(min(left, 1.0))
        if msg is None:
            continue
        err = msg.error()
        if err is None:
            out.append(msg)
        elif err.fatal():
            raise BrokerError(f"fatal consumer error: {err}")
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err)
    return out


def consume_queued(consumer: Consumer, max_messages: int, wait: float) -> list[Message]:
    """What is queued now (up to ``max_messages``), or else the first message to arrive
    within ``wait`` seconds (``[]``: none came).

    ``consume(n, t)`` waits out ``t`` unless ``n`` messages are there, which at the end of
    a replay, in a small one or live they never are: a loop paying that on every call
    stalls. Messages are returned as consumed (errors and EOF events included).
    """
    msgs = consumer.consume(max_messages, 0)
    return msgs or consumer.consume(1, max(0.0, wait))
