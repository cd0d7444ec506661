"""Publish triggers to the features topic as ``feature_batch`` messages.

:class:`FeaturePublisher` cuts a span into batches of ``batch_seconds`` (one message
each), numbers them with a per-source ``seq`` and sends them with key = source id and
timestamp = ``gps_to_kafka_ms(batch start)`` (DESIGN.md, "Time"), so a consumer can
seek by time. Partitions: ``"key"`` (librdkafka's hash of the source id: one source,
one partition, ordered), ``"round_robin"`` (``seq % partitions``: spreads one source
over every partition; the reader reassembles by ``seq``) or ``"block"`` (a batch of
data second ``s`` goes to ``floor(s / block_seconds) % partitions``: a block of time
lives in one partition, so a replica of a shared stage reads only its own blocks,
docs/SCALE_OUT.md; a batch must not straddle a block edge). Batches are sent as fast as
possible, or paced by a clock (a batch leaves once ``clock.now()`` passed its end,
like a live producer).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer
from numpy.typing import ArrayLike

from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import BrokerError
from idq_common.gpstime import Clock, gps_to_kafka_ms
from idq_common.io.avro import codec
from idq_common.io.avro.convert import triggers_to_batch
from idq_common.io.kafka.clients import DeliveryTracker, flush
from idq_common.io.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)


def block_of(gps: float, block_seconds: float) -> int:
    """The block number of data at ``gps`` (``floor(gps / block_seconds)``).

    A hair of tolerance: a batch start computed as ``start + k * batch`` may land a
    rounding error below a block edge it is meant to sit on.
    """
    return math.floor(gps / block_seconds + 1e-9)


def block_partition(gps: float, block_seconds: float, partitions: int) -> int:
    """The partition of the block holding ``gps`` under the ``"block"`` partitioner."""
    return block_of(gps, block_seconds) % partitions


def partitioning(kafka: KafkaSettings, partitions: int | None = None) -> dict[str, Any]:
    """The :class:`FeaturePublisher` keyword arguments ``[kafka] partitioner`` asks for.

    ``partitions``: the features topic's real partition count when the caller knows
    it (default ``[kafka] partitions``, what the topic was created with).
    """
    return {
        "partitioner": kafka.partitioner,
        "partitions": partitions or kafka.partitions,
        "block_seconds": kafka.block_seconds,
    }


class FeaturePublisher:
    """Send triggers as ``feature_batch`` messages of ``batch_seconds`` each.

    Parameters
    ----------
    producer : confluent_kafka.Producer
        From ``KafkaSettings.producer_config()``.
    topic : str
        The features topic.
    ifo, source_id : str
        Instrument and producer id (the message key; ``seq`` is counted per source).
    batch_seconds : float
        Span of one message.
    partitioner : {"key", "round_robin", "block"}
        How batches are spread over partitions.
    partitions : int, optional
        Partition count, needed for ``"round_robin"`` and ``"block"``.
    block_seconds : float
        Block length of the ``"block"`` partitioner (a multiple of ``batch_seconds``).
    clock : Clock, optional
        Pace batches on this clock (real time with a WallClock); None: as fast as possible.
    seq : int
        First sequence number (0 for a fresh source).
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        ifo: str,
        source_id: str,
        batch_seconds: float = 1.0,
        partitioner: str = "key",
        partitions: int | None = None,
        clock: Clock | None = None,
        seq: int = 0,
        block_seconds: float = 16.0,
    ) -> None:
        if batch_seconds <= 0:
            raise ValueError(f"batch_seconds must be > 0, got {batch_seconds}")
        if partitioner not in ("key", "round_robin", "block"):
            raise ValueError(
                f"partitioner must be 'key', 'round_robin' or 'block', got {partitioner!r}"
            )
        if partitioner in ("round_robin", "block") and not partitions:
            raise ValueError(f"{partitioner} needs the partition count")
        if partitioner == "block":
            n = block_seconds / batch_seconds
            if block_seconds <= 0 or abs(n - round(n)) > 1e-9:
                raise ValueError(
                    f"block_seconds ({block_seconds:g}) must be a multiple of "
                    f"batch_seconds ({batch_seconds:g}): a batch must not straddle a block"
                )
        self.producer = producer
        self.topic = topic
        self.ifo = ifo
        self.source_id = source_id
        self.batch_seconds = float(batch_seconds)
        self.partitioner = partitioner
        self.partitions = partitions
        self.block_seconds = float(block_seconds)
        self.clock = clock
        self.seq = seq
        self.sent = 0
        self._tracker = DeliveryTracker()

    def batch_spans(self, start: float, end: float) -> list[tuple[float, float]]:
        """The batch spans covering ``[start, end)`` (the last one may be short)."""
        n = max(0, math.ceil((end - start) / self.batch_seconds - 1e-9))
        # start + k*batch, not accumulated, so spans are exact and chunk-independent
        edges = [start + k * self.batch_seconds for k in range(n)] + [end]
        return [(edges[k], min(edges[k + 1], end)) for k in range(n)]

    def publish_batch(
        self,
        triggers: TriggerSet,
        start: float,
        end: float,
        extra: Mapping[str, ArrayLike] | None = None,
    ) -> None:
        """Send one batch holding every trigger of the source in ``[start, end)``.

        ``extra``: optional float64 columns (``q``, ``phase``, ``duration``), one per row.
        """
        record = triggers_to_batch(
            triggers, self.ifo, self.source_id, self.seq, start, end, extra=extra
        )
        kwargs: dict[str, Any] = {}
        if self.partitioner == "round_robin" and self.partitions:
            kwargs["partition"] = self.seq % self.partitions
        elif self.partitioner == "block" and self.partitions:
            kwargs["partition"] = block_partition(start, self.block_seconds, self.partitions)
        payload = codec.encode("feature_batch", record)
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    payload,
                    key=self.source_id.encode(),
                    timestamp=gps_to_kafka_ms(start),
                    on_delivery=self._tracker,
                    **kwargs,
                )
                break
            except BufferError:
                self.producer.poll(0.1)  # local queue full: let deliveries drain
            except KafkaException as exc:
                raise BrokerError(f"producing to {self.topic} failed: {exc}") from exc
        self.producer.poll(0)
        self.seq += 1
        self.sent += 1

    def publish(
        self,
        generate: Callable[[float, float], TriggerSet],
        start: float,
        end: float,
        channels: tuple[str, ...] | None = None,
    ) -> int:
        """Publish ``generate(bs, be)`` for every batch span of ``[start, end)``.

        ``generate`` is e.g. ``SyntheticModel.generate`` (chunk-invariant) or a slice
        of a held :class:`TriggerSet`. Returns the number of batches sent.
        """
        n = 0
        for bs, be in self.batch_spans(start, end):
            if self.clock is not None:
                wait = be - self.clock.now()
                if wait > 0:
                    self.clock.sleep(wait)
            trig = generate(bs, be)
            if channels is not None:
                trig = trig.select_channels(channels)
            self.publish_batch(trig, bs, be)
            n += 1
        log.info(
            "published %d batches [%s, %s) of %s to %s", n, start, end, self.source_id, self.topic
        )
        return n

    def publish_triggers(self, triggers: TriggerSet, start: float, end: float) -> int:
        """Publish a held trigger set over ``[start, end)`` in batches."""
        return self.publish(triggers.select_time, start, end)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every delivery; raise :class:`BrokerError` on any failure."""
        flush(self.producer, timeout, self._tracker)
        self._tracker = DeliveryTracker()
