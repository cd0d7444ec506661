"""Send messages a stage could not decode or use to the dead-letter topic.

DESIGN.md: "A message that cannot be decoded or used goes to the dead-letter topic with
the reason and its origin (topic, partition, offset); the stage goes on." The record is
the Avro ``dead_letter`` kind (``schemas/dead_letter.avsc``), keeping the original key
and payload byte for byte so the message can be inspected and replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaException, Message, Producer

from idq_common.exceptions import BrokerError
from idq_common.io.avro import codec
from idq_common.io.kafka.clients import DeliveryTracker, flush

log = logging.getLogger(__name__)


class DeadLetterPublisher:
    """Publishes dead letters for one stage to one topic.

    Parameters
    ----------
    producer : confluent_kafka.Producer
        Shared with the stage (dead letters are rare; no producer of their own).
    topic : str
        The dead-letter topic, e.g. ``idq.H1.deadletter``.
    stage : str
        Name of the rejecting stage, e.g. ``"evaluate"``.
    on_publish : callable, optional
        Called with the reason after each publish (the stage increments
        ``idq_deadletter_messages_total`` there).
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        stage: str,
        on_publish: Callable[[str], None] | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.stage = stage
        self.on_publish = on_publish
        self._tracker = DeliveryTracker()
        self.published = 0

    def publish(
        self,
        reason: str,
        origin_topic: str,
        partition: int,
        offset: int,
        payload: bytes | None,
        key: bytes | str | None = None,
        *,
        timestamp_ms: int = -1,
        stage: str | None = None,
    ) -> None:
        """Queue one dead letter (delivered on the producer's next poll/flush).

        Parameters
        ----------
        reason : str
            Why, e.g. ``"bad_marker: ..."``; the part before ``':'`` is the metric label
            by convention.
        origin_topic, partition, offset : str, int, int
            Where the rejected message came from.
        payload : bytes or None
            The original value, unchanged (None is stored as empty bytes).
        key : bytes or str, optional
            The original key; also the dead letter's key.
        timestamp_ms : int
            The original message timestamp (Unix ms), -1 when unknown; reused as the dead
            letter's own timestamp so a time-based replay finds it with its data.
        stage : str, optional
            Overrides the publisher's stage for this record.
        """
        key_bytes = key.encode() if isinstance(key, str) else key
        record = {
            "stage": stage or self.stage,
            "reason": reason,
            "topic": origin_topic,
            "partition": int(partition),
            "offset": int(offset),
            "timestamp_ms": int(timestamp_ms),
            "key": key_bytes,
            "payload": payload or b"",
        }
        value = codec.encode("dead_letter", record)
        kwargs: dict[str, Any] = {"key": key_bytes, "on_delivery": self._tracker}
        if timestamp_ms > 0:
            kwargs["timestamp"] = int(timestamp_ms)
        try:
            self.producer.produce(self.topic, value, **kwargs)
        except (BufferError, KafkaException) as exc:
            raise BrokerError(f"queueing a dead letter to {self.topic} failed: {exc}") from exc
        self.producer.poll(0)  # serve delivery callbacks of earlier dead letters
        self.published += 1
        log.warning("dead letter from %s[%d]@%d: %s", origin_topic, partition, offset, reason)
        if self.on_publish is not None:
            self.on_publish(reason)

    def publish_message(self, reason: str, msg: Message, *, stage: str | None = None) -> None:
        """Dead-letter a consumed ``confluent_kafka.Message`` as it is."""
        ts_type, ts = msg.timestamp()
        self.publish(
            reason,
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            msg.value(),
            msg.key(),
            timestamp_ms=ts if ts_type != TIMESTAMP_NOT_AVAILABLE else -1,
            stage=stage,
        )

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for queued dead letters; raise :class:`BrokerError` if any failed."""
        tracker, self._tracker = self._tracker, DeliveryTracker()
        flush(self.producer, timeout, tracker)
