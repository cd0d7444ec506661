"""Dead letters on the real broker, decoded with the Avro codec."""

from __future__ import annotations

import uuid

import pytest

from idq_common.gpstime import gps_to_kafka_ms
from idq_common.io.avro import codec
from idq_common.io.kafka.clients import make_consumer, make_producer, poll_messages, produce_sync
from idq_common.io.kafka.deadletter import DeadLetterPublisher

pytestmark = pytest.mark.kafka


def test_dead_letter_round_trip(kafka_bootstrap: str, kafka_topic_factory) -> None:
    source = kafka_topic_factory("src")
    dlq = kafka_topic_factory("dlq")
    producer = make_producer({"bootstrap.servers": kafka_bootstrap})
    ts = gps_to_kafka_ms(1_400_000_123.0)
    produce_sync(producer, source, b"\x00garbage", b"key-1", timestamp_ms=ts)

    consumer = make_consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    reasons: list[str] = []
    try:
        consumer.subscribe([source])
        [bad] = poll_messages(consumer, 1, timeout=30)
        publisher = DeadLetterPublisher(producer, dlq, "evaluate", on_publish=reasons.append)
        publisher.publish_message("bad_marker: no C3 01", bad)
        publisher.publish("invalid_message: empty", "other.topic", 3, 42, None)
        publisher.flush()
        assert reasons == ["bad_marker: no C3 01", "invalid_message: empty"]
        assert publisher.published == 2

        consumer.unsubscribe()
        consumer.subscribe([dlq])
        letters = poll_messages(consumer, 2, timeout=30)
    finally:
        consumer.close()
    assert len(letters) == 2
    kind, first = codec.decode(letters[0].value())
    assert kind == "dead_letter"
    assert first == {
        "stage": "evaluate",
        "reason": "bad_marker: no C3 01",
        "topic": source,
        "partition": 0,
        "offset": 0,
        "timestamp_ms": ts,
        "key": b"key-1",
        "payload": b"\x00garbage",
    }
    assert letters[0].key() == b"key-1"
    assert letters[0].timestamp()[1] == ts  # replays by time find the letter with its data
    _, second = codec.decode(letters[1].value())
    assert (second["topic"], second["partition"], second["offset"]) == ("other.topic", 3, 42)
    assert second["payload"] == b"" and second["key"] is None and second["timestamp_ms"] == -1
