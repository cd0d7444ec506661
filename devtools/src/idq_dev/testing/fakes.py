"""In-memory producer, progress and quiver consumer for unit tests of stage logic.

Fakes for unit tests of logic only: a stage's real path (Kafka producer, consumer
group, committed offsets) stays covered by the end-to-end test against a real broker.
They keep what a stage did so a test can assert on it: the messages produced
(decoded), the progress saved, the offsets committed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TopicPartition

from idq_common.gpstime import Clock
from idq_common.io.avro import decode
from idq_common.stage.runtime import ServiceRuntime


@dataclass
class FakeMessage:
    """What a stage reads of a ``confluent_kafka.Message``."""

    _topic: str
    _value: bytes | None
    _key: bytes | None = None
    _partition: int = 0
    _offset: int = 0
    _timestamp: int = -1

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self._timestamp

    def error(self) -> None:
        return None


class MemoryProducer:
    """Keeps every produced message; every delivery succeeds."""

    def __init__(self) -> None:
        self.messages: list[FakeMessage] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | str | None = None,
        timestamp: int = -1,
        on_delivery: Callable[[Any, Any], None] | None = None,
        **_: Any,
    ) -> None:
        k = key.encode() if isinstance(key, str) else key
        offset = sum(m.topic() == topic for m in self.messages)
        msg = FakeMessage(topic, value, k, 0, offset, timestamp)
        self.messages.append(msg)
        if on_delivery is not None:
            on_delivery(None, msg)

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def flush(self, timeout: float = 0.0) -> int:
        return 0

    def records(self, topic: str) -> list[tuple[str, dict[str, Any]]]:
        """``(key, decoded record)`` of every message produced to ``topic``, in order."""
        return [
            ((m.key() or b"").decode(), decode(m.value() or b"")[1])
            for m in self.messages
            if m.topic() == topic
        ]


@dataclass
class MemoryProgress:
    """A stage's progress kept in memory (one partition, all strides owned)."""

    resumed: float | None = None
    metadata: dict[str, Any] | None = None
    saves: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def load(self) -> float | None:
        return self.saves[-1][0] if self.saves else self.resumed

    def load_metadata(self) -> dict[str, Any] | None:
        if self.saves:
            return {"next_gps": self.saves[-1][0], **self.saves[-1][1]}
        return self.metadata

    def save(self, next_gps: float, pad: float = 0.0, extra: dict[str, Any] | None = None) -> None:
        self.saves.append((next_gps, dict(extra or {})))

    def serve(self, timeout: float = 0.0) -> None:
        pass

    def reassigned(self) -> bool:
        return False

    def owns(self, stride_index: int, start: float | None = None) -> bool:
        return True

    def lag(self) -> int:
        return 0

    def close(self) -> None:
        pass


class MemoryConsumer:
    """A one-partition consumer group member over a list of messages (calibrate's quivers).

    ``consume`` hands out what was :meth:`add`-ed and not yet consumed; ``commit``
    records the committed offsets.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.messages: list[FakeMessage] = []
        self._next = 0
        self.commits: list[int] = []

    def add(self, value: bytes, key: str = "") -> None:
        self.messages.append(FakeMessage(self.topic, value, key.encode(), 0, len(self.messages)))

    def subscribe(self, topics: list[str], on_assign: Callable[..., None] | None = None) -> None:
        if on_assign is not None:
            on_assign(self, [TopicPartition(self.topic, 0)])

    def consume(self, num_messages: int = 1, timeout: float = 0.0) -> list[FakeMessage]:
        out = self.messages[self._next : self._next + num_messages]
        self._next += len(out)
        return out

    def commit(
        self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> None:
        for tp in offsets or []:
            self.commits.append(tp.offset)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, 0)]

    def committed(
        self, partitions: list[TopicPartition], timeout: float = 0.0
    ) -> list[TopicPartition]:
        return [TopicPartition(self.topic, 0, self.commits[-1] if self.commits else -1001)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, 0, self._next)]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = 0.0, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.messages)

    def close(self) -> None:
        pass


def memory_runtime(stage: str, ifo: str, clock: Clock, deadletter_topic: str) -> ServiceRuntime:
    """A runtime producing into a :class:`MemoryProducer` (its ``producer``), no signal handlers.

    Its metrics server is real (port 0), so a test can also scrape ``/metrics``.
    """
    return ServiceRuntime(
        stage=stage,
        ifo=ifo,
        producer=MemoryProducer(),  # type: ignore[arg-type]
        deadletter_topic=deadletter_topic,
        clock=clock,
        install_signals=False,
    )
