"""Follow the compacted models and calibrations topics.

Train announces models and calibrate announces calibration maps; evaluate and
timeseries follow those announcements, load the artifact from the store, verify its
sha256 and swap it in live. A failed load keeps the artifact already in use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from idq_common.exceptions import BrokerError, DecodeError
from idq_common.io.avro import decode

log = logging.getLogger(__name__)

DeadLetterFn = Callable[[str, str, int, int, bytes | None], None]


@dataclass
class AnnouncementTracker:
    """Keep the latest announcement per classifier, and every one by id.

    Parameters
    ----------
    consumer_config : dict
        librdkafka configuration; the group id is irrelevant (partitions are
        assigned, offsets never committed: the whole compacted topic is read).
    topic : str
        ``models`` or ``calibrations`` topic.
    kind : str
        Avro kind expected: ``model_announcement`` or ``calibration_announcement``.
    id_field : str
        Field holding the artifact id (``model_id`` / ``calibration_id``).
    deadletter : callable, optional
        Called with (reason, topic, partition, offset, payload) for undecodable messages.
    """

    consumer_config: dict[str, Any]
    topic: str
    kind: str
    id_field: str
    deadletter: DeadLetterFn | None = None
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = dict(self.consumer_config)
        cfg["enable.auto.commit"] = False
        cfg.pop("enable.auto.offset.store", None)
        self._consumer = Consumer(cfg)
        md = self._consumer.list_topics(self.topic, timeout=10)
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise BrokerError(f"topic {self.topic!r} is not available")
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        )

    def refresh(self, timeout: float = 0.0, max_messages: int = 1000) -> int:
        """Absorb new announcements; return how many were new.

        ``timeout`` bounds the wait for the first message; later ones are taken
        only while immediately available.
        """
        n = 0
        wait = timeout
        while n < max_messages:
            msg = self._consumer.poll(wait)
            wait = 0.0
            if msg is None:
                break
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consumer error %s", self.topic, err)
                continue
            payload = msg.value() or b""
            part, offset = msg.partition() or 0, msg.offset() or 0
            try:
                kind, record = decode(payload)
                if kind != self.kind:
                    raise DecodeError(f"expected {self.kind}, got {kind}")
            except DecodeError as exc:
                log.error("%s[%d]@%d: %s", self.topic, part, offset, exc)
                if self.deadletter is not None:
                    self.deadletter(str(exc), self.topic, part, offset, payload)
                continue
            self._absorb(record)
            n += 1
        return n

    def _absorb(self, record: dict[str, Any]) -> None:
        ident = record[self.id_field]
        self.by_id[ident] = record
        current = self.latest.get(record["classifier"])
        if current is None or (record["created_gps"], ident) >= (
            current["created_gps"],
            current[self.id_field],
        ):
            self.latest[record["classifier"]] = record

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Refresh until ``predicate()`` holds or ``timeout`` seconds of polling pass."""
        import time

        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.refresh(timeout=min(left, 0.5))
        return True

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()
