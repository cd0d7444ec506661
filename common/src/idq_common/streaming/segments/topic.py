"""Segments from the segments topic (Avro kind ``segment_update``).

The source keeps what the topic has said so far: where each update's flag state
is *known* and where it is *active*. A later update overrides the state over the
span it covers. A query for a span not yet fully known raises
:class:`~idq_common.exceptions.BadSpanError` (the stream processor records that
stride as a gap rather than guessing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError
from igwn_segments import segment, segmentlist

from idq_common.exceptions import BadSpanError, DecodeError, InvalidMessageError
from idq_common.io.avro import codec
from idq_common.io.avro.convert import record_to_segment_update
from idq_common.io.kafka.clients import seek_to_time
from idq_common.streaming.segments.base import clip

log = logging.getLogger(__name__)

#: ``dead_letter(reason, topic, partition, offset, payload)``
DeadLetter = Callable[[str, str, int, int, bytes], None]


class TopicSegments:
    """Answer segment queries from ``segment_update`` messages.

    Parameters
    ----------
    consumer : confluent_kafka.Consumer or None
        A consumer (any group id; partitions are assigned manually). None: the
        source is fed only through :meth:`apply`.
    topic : str
        The segments topic.
    flag : str, optional
        Only updates of this flag are used (others are ignored).
    start : float, optional
        GPS time to seek to (minus ``lookback``) before the first read.
    lookback : float
        Seconds before ``start`` to read from, so the update covering ``start`` is seen.
    wait : float
        Real seconds a query keeps reading for a span that is not yet known.
    dead_letter : callable, optional
        Receives undecodable messages with their origin; they are then skipped.
    """

    def __init__(
        self,
        consumer: Consumer | None,
        topic: str,
        flag: str | None = None,
        start: float | None = None,
        lookback: float = 3600.0,
        wait: float = 0.0,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.flag = flag
        self.wait = wait
        self.dead_letter = dead_letter
        self.known = segmentlist()
        self.active = segmentlist()
        self.updates = 0
        if consumer is not None:
            seek_to_time(consumer, topic, (start if start is not None else 0.0) - lookback)

    def apply(self, known: segmentlist, active: segmentlist) -> None:
        """Merge one update: over ``known`` the flag is now exactly ``active``."""
        known = segmentlist(known).coalesce()
        active = segmentlist(active).coalesce() & known
        self.active = ((self.active - known) | active).coalesce()
        self.known = (self.known | known).coalesce()
        self.updates += 1

    def _handle(self, payload: bytes, partition: int, offset: int) -> None:
        try:
            kind, record = codec.decode(payload)
            if kind != "segment_update":
                raise InvalidMessageError(f"expected segment_update, got {kind}")
            if self.flag is not None and record["flag"] != self.flag:
                return
            known, active = record_to_segment_update(record)
        except (DecodeError, InvalidMessageError) as exc:
            log.warning(
                "segments topic %s[%d]@%d: skipping bad message: %s",
                self.topic,
                partition,
                offset,
                exc,
            )
            if self.dead_letter is not None:
                self.dead_letter(
                    f"{type(exc).__name__}: {exc}", self.topic, partition, offset, payload
                )
            return
        self.apply(known, active)

    def advance(self, timeout: float) -> bool:
        """Read what the topic holds for up to ``timeout`` real seconds; True if anything arrived."""
        if self.consumer is None:
            return False
        got = False
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.consumer.consume(500, max(0.0, min(0.1, deadline - time.monotonic())))
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("segments consumer error: %s", err)
                    continue
                got = True
                self._handle(msg.value() or b"", msg.partition() or 0, msg.offset() or 0)
            if not msgs or time.monotonic() >= deadline:
                return got

    def covers(self, start: float, end: float) -> bool:
        """True when the flag's state over ``[start, end)`` is known."""
        return end <= start or segment(start, end) in self.known

    def query(self, start: float, end: float) -> segmentlist:
        """Active segments in ``[start, end)``.

        Raises
        ------
        BadSpanError
            Part of the span is not known yet (after reading for ``wait`` seconds).
        """
        deadline = time.monotonic() + self.wait
        self.advance(0.05)
        while not self.covers(start, end) and time.monotonic() < deadline:
            self.advance(min(0.2, max(0.0, deadline - time.monotonic())))
        if not self.covers(start, end):
            missing = segmentlist([segment(start, end)]) - self.known
            raise BadSpanError(
                f"segments topic {self.topic}: {self.flag or 'flag'} not yet known over {missing}"
            )
        return clip(self.active, start, end)

    def close(self) -> None:
        """Close the consumer (a stage that rebuilds its source closes the old one)."""
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def stats(self) -> dict[str, Any]:
        """Counts for logs and metrics."""
        return {"updates": self.updates, "known": abs(self.known), "active": abs(self.active)}
