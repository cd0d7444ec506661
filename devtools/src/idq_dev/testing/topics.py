"""Read a whole topic back: what tests and benchmarks assert on (topic contents, not logs)."""

from __future__ import annotations

from typing import Any, NamedTuple

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from idq_common.exceptions import DecodeError
from idq_common.io.avro import decode
from idq_common.io.kafka.settings import KafkaSettings


class TopicMessage(NamedTuple):
    """One decoded message and where it was."""

    key: bytes | None
    record: dict[str, Any]
    partition: int
    offset: int
    timestamp_ms: int


def read_topic(
    kafka: KafkaSettings,
    topic: str,
    reader: str = "idq.test.reader",
    skip_undecodable: bool = False,
) -> list[TopicMessage]:
    """Every message of ``topic``, decoded, partition by partition in offset order.

    Reads with partitions assigned (no group membership, nothing committed) from the
    low to the high watermark as they are when called. ``skip_undecodable``: leave out
    messages that are not valid Avro (the dead letters' business) instead of raising.
    """
    consumer = Consumer({**kafka.consumer_config(reader), "enable.auto.commit": False})
    out: list[TopicMessage] = []
    try:
        for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            while True:
                msgs = consumer.consume(1000, timeout=5)
                for m in msgs:
                    if m.error() is not None:
                        continue
                    try:
                        record = decode(m.value() or b"")[1]
                    except DecodeError:
                        if skip_undecodable:
                            continue
                        raise
                    out.append(
                        TopicMessage(
                            m.key(), record, m.partition() or 0, m.offset() or 0, m.timestamp()[1]
                        )
                    )
                if not msgs or (msgs[-1].offset() or 0) >= high - 1:
                    break
    finally:
        consumer.close()
    return out


def group_assignment(kafka: KafkaSettings, group: str, topic: str) -> list[set[int]]:
    """The partitions of ``topic`` each member of consumer ``group`` holds, as the broker
    reports them (members holding none of ``topic`` are left out; none while the
    group's coordinator does not answer)."""
    admin = AdminClient(kafka.admin_config())
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException:
        return []  # no coordinator for the group yet (it is being formed): nobody holds any
    held = (
        {tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic}
        for member in description.members
    )
    return [parts for parts in held if parts]
