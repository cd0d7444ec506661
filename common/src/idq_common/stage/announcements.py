"""Model and calibration announcements: typed records, and following their compacted topics.

Train announces models and calibrate announces calibration maps; evaluate and
timeseries follow those announcements, load the artifact from the store, verify its
sha256 and swap it in live. :class:`Announcements` is the in-memory log (latest per
classifier, every one by id); :class:`AnnouncementTracker` fills it from a topic.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from idq_common.exceptions import BrokerError, DecodeError, InvalidMessageError
from idq_common.io.avro import decode, encode

log = logging.getLogger(__name__)

DeadLetterFn = Callable[[str, str, int, int, bytes | None], None]


@dataclass(frozen=True, kw_only=True)
class _Announcement:
    """What both announcement records share: the artifact's place and span, the model,
    the Avro kind, record and encoding."""

    kind: ClassVar[str]

    ifo: str
    classifier: str
    #: the model (of a calibration: the model whose ranks it calibrates)
    model_id: str
    uri: str
    sha256: str
    created_gps: float
    start: float
    end: float
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """From a decoded Avro record (raises :class:`InvalidMessageError` if incomplete)."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in record.items() if k in names})
        except TypeError as exc:
            raise InvalidMessageError(f"{cls.kind}: {exc}") from exc

    def to_record(self) -> dict[str, Any]:
        """The Avro record."""
        return dataclasses.asdict(self)

    def encode(self) -> bytes:
        """Avro single-object encoding."""
        return encode(self.kind, self.to_record())


@dataclass(frozen=True, kw_only=True)
class ModelAnnouncement(_Announcement):
    """A trained model in the store (``model_announcement`` on the models topic)."""

    kind: ClassVar[str] = "model_announcement"

    flavor: str
    n_samples: int

    @property
    def ident(self) -> str:
        """The artifact id."""
        return self.model_id


@dataclass(frozen=True, kw_only=True)
class CalibrationAnnouncement(_Announcement):
    """A calibration map in the store, and the model whose ranks it calibrates."""

    kind: ClassVar[str] = "calibration_announcement"

    calibration_id: str
    n_glitch: int
    n_clean: int
    healthy: bool
    #: where the model is, for a reader that has not seen its announcement
    model_uri: str = ""
    model_sha256: str = ""
    #: the smallest FAP the map gives (0: not recorded, announcements before v3)
    fap_floor: float = 0.0

    @property
    def ident(self) -> str:
        """The artifact id."""
        return self.calibration_id


A = TypeVar("A", ModelAnnouncement, CalibrationAnnouncement)


class Announcements(Generic[A]):
    """The announcements seen so far: the latest per classifier, and every one by id.

    Filled by :meth:`add`; :class:`AnnouncementTracker` adds what a topic holds. Used
    as is, it is the in-memory log a stage reads in a unit test.
    """

    def __init__(self) -> None:
        self.latest: dict[str, A] = {}
        self.by_id: dict[str, A] = {}
        #: where each announcement came from (topic, partition, offset), when known
        self.origins: dict[str, tuple[str, int, int]] = {}

    def add(self, ann: A, origin: tuple[str, int, int] | None = None) -> None:
        """Record ``ann``; the latest per classifier is the newest ``(created_gps, id)``."""
        self.by_id[ann.ident] = ann
        if origin is not None:
            self.origins[ann.ident] = origin
        current = self.latest.get(ann.classifier)
        if current is None or (ann.created_gps, ann.ident) >= (current.created_gps, current.ident):
            self.latest[ann.classifier] = ann

    def refresh(self, timeout: float = 0.0, max_messages: int = 1000) -> int:
        """Absorb new announcements; return how many were new (none here: see :meth:`add`)."""
        return 0

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Whether ``predicate()`` holds (in memory nothing arrives by waiting)."""
        return predicate()

    def close(self) -> None:
        """Release what the log holds (nothing here)."""


class AnnouncementTracker(Announcements[A]):
    """:class:`Announcements` read from a compacted topic, from its beginning.

    Parameters
    ----------
    consumer_config : dict
        librdkafka configuration; the group id is irrelevant (partitions are
        assigned, offsets never committed: the whole compacted topic is read).
    topic : str
        ``models`` or ``calibrations`` topic.
    record_type : type
        :class:`ModelAnnouncement` or :class:`CalibrationAnnouncement`.
    deadletter : callable, optional
        Called with (reason, topic, partition, offset, payload) for undecodable messages.
    """

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topic: str,
        record_type: type[A],
        deadletter: DeadLetterFn | None = None,
    ) -> None:
        super().__init__()
        self.topic = topic
        self.record_type: type[A] = record_type
        self.deadletter = deadletter
        cfg = dict(consumer_config)
        cfg["enable.auto.commit"] = False
        cfg.pop("enable.auto.offset.store", None)
        self._consumer = Consumer(cfg)
        md = self._consumer.list_topics(topic, timeout=10)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            self._consumer.close()
            raise BrokerError(f"topic {topic!r} is not available")
        # what the topic holds now: the first refresh with a timeout reads up to there
        # and returns, instead of waiting out its timeout for a message that may never
        # come (2 s at every train start on a new topic). Read before the assignment:
        # a watermark lookup queues behind a fetch waiting on the broker for data.
        self._backlog: dict[int, int] = {}
        for p in sorted(meta.partitions):
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10, cached=False
            )
            if high > low:
                self._backlog[p] = high
        self._refreshed = False
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        )

    def _behind(self) -> bool:
        """Whether some partition is not yet read to its end at start-up."""
        if self._backlog:
            tps = [TopicPartition(self.topic, p) for p in self._backlog]
            for tp in self._consumer.position(tps):
                if tp.offset >= self._backlog[tp.partition]:
                    del self._backlog[tp.partition]
        return bool(self._backlog)

    def refresh(self, timeout: float = 0.0, max_messages: int = 1000) -> int:
        """Absorb new announcements; return how many were new.

        ``timeout`` bounds the wait: at first for what the topic held at start-up (the
        first call returns once that is read, at once for an empty topic), later for
        the first new message; more are taken only while immediately available.
        """
        n = 0
        deadline = time.monotonic() + timeout
        catching_up = self._behind()
        # the first call is a catch-up: it waits for the start-up backlog, nothing newer
        wait = 0.0 if catching_up or not self._refreshed else timeout
        self._refreshed = True
        while n < max_messages:
            if catching_up:
                catching_up = self._behind()
                # short polls while the backlog is being read, none once it is
                wait = min(0.1, max(0.0, deadline - time.monotonic())) if catching_up else 0.0
            msg = self._consumer.poll(wait)
            if not catching_up:
                wait = 0.0
            if msg is None:
                if catching_up and time.monotonic() < deadline:
                    continue
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
                if kind != self.record_type.kind:
                    raise DecodeError(f"expected {self.record_type.kind}, got {kind}")
                ann = self.record_type.from_record(record)
            except (DecodeError, InvalidMessageError) as exc:
                log.error("%s[%d]@%d: %s", self.topic, part, offset, exc)
                if self.deadletter is not None:
                    self.deadletter(str(exc), self.topic, part, offset, payload)
                continue
            self.add(ann, (self.topic, part, offset))
            n += 1
        return n

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Refresh until ``predicate()`` holds or ``timeout`` seconds of polling pass."""
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
