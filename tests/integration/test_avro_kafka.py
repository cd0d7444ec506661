"""Every Avro message kind through the real Kafka broker and back, byte-exact."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from idq_common.data.triggers import TriggerSet
from idq_common.io.avro import KINDS, decode, decode_fast, encode
from idq_common.io.avro.convert import batch_to_triggers, triggers_to_batch
from idq_common.io.kafka.clients import consume_queued
from idq_dev.testing.avro_samples import sample_records

pytestmark = pytest.mark.kafka


def _consume_all(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    """Read ``count`` messages of partition 0 from the beginning (waits on the condition)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
    finally:
        consumer.close()
    assert len(got) == count, f"consumed {len(got)} of {count} messages"
    return got


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[Any] = []
    for key, value in messages:
        producer.produce(
            topic, value=value, key=key, on_delivery=lambda e, _m: e and errors.append(e)
        )
    assert producer.flush(30) == 0
    assert not errors, errors


def test_every_kind_through_broker(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory("avro")
    records = sample_records(seed=11)
    sent = [(kind.encode(), encode(kind, records[kind])) for kind in KINDS]
    _produce(kafka_bootstrap, topic, sent)
    msgs = _consume_all(kafka_bootstrap, topic, len(sent))
    for (key, value), msg in zip(sent, msgs, strict=True):
        assert msg.key() == key
        assert msg.value() == value
        kind, record = decode(msg.value())
        assert kind == key.decode()
        assert record == records[kind]


def test_full_size_feature_batch_through_broker(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    """A one-second batch of 16,000 triggers (1,000 channels x 16 Hz) fits one message."""
    rng = np.random.default_rng(2)
    n = 16_000
    ts = TriggerSet(
        channels=tuple(f"H1:AUX-{i:04d}" for i in range(1000)),
        channel=rng.integers(0, 1000, n),
        time=np.sort(1e9 + rng.random(n)),
        snr=rng.gamma(2.0, 3.0, n),
        frequency=rng.uniform(10, 2048, n),
    )
    value = encode("feature_batch", triggers_to_batch(ts, "H1", "src", 0, 1e9, 1e9 + 1))
    topic = kafka_topic_factory("features")
    _produce(kafka_bootstrap, topic, [(b"src", value)])
    (msg,) = _consume_all(kafka_bootstrap, topic, 1)
    back = batch_to_triggers(decode(msg.value())[1])
    for name in ("channel", "time", "snr", "frequency"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ts, name))
    # the stages' reader: the same rows
    kind, record = decode_fast(msg.value())
    assert kind == "feature_batch" and isinstance(record["channels"], tuple)
    fast = batch_to_triggers(record)
    assert fast.channels == ts.channels
    for name in ("channel", "time", "snr", "frequency"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(ts, name))


def test_consume_queued_takes_the_queue_or_waits_for_one(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    """Queued messages come at once (not after the wait); an empty queue waits for the
    first message, or the whole wait when none comes."""
    topic = kafka_topic_factory("queued")
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic}.q", "fetch.wait.max.ms": 10}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    try:
        t0 = time.monotonic()
        assert consume_queued(consumer, 100, 1.0) == []
        assert time.monotonic() - t0 >= 0.9
        _produce(kafka_bootstrap, topic, [(b"k", b"v%d" % i) for i in range(20)])
        got: list[Any] = []
        deadline = time.monotonic() + 60
        while len(got) < 20 and time.monotonic() < deadline:
            got += [m for m in consume_queued(consumer, 100, 30.0) if m.error() is None]
        assert [m.value() for m in got] == [b"v%d" % i for i in range(20)]
        # nothing left: a short wait, then nothing
        assert consume_queued(consumer, 100, 0.2) == []
    finally:
        consumer.close()
