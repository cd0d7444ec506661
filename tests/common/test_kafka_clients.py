"""``committed_offsets``: a coordinator that is not ready yet is waited for, not fatal."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from idq_common.io.kafka.clients import committed_offsets


class _Consumer:
    """Answers ``committed`` with the given errors first, then the offsets."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.calls += 1
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in tps]


def test_not_coordinator_is_retried_until_the_group_is_ready() -> None:
    consumer: Any = _Consumer([KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS])
    out = committed_offsets(consumer, [TopicPartition("t", 0)], retry_for=30.0)
    assert [tp.offset for tp in out] == [7] and consumer.calls == 3


def test_other_errors_and_transient_ones_past_the_deadline_raise() -> None:
    with pytest.raises(KafkaException):
        committed_offsets(_Consumer([KafkaError.TOPIC_AUTHORIZATION_FAILED]), [])  # type: ignore[arg-type]
    consumer: Any = _Consumer([KafkaError.NOT_COORDINATOR] * 3)
    with pytest.raises(KafkaException):
        committed_offsets(consumer, [TopicPartition("t", 0)], retry_for=0.0)
    assert consumer.calls == 1
