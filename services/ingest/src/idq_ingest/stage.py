"""The ingest loop: SNAX/sgnax JSON in, ``feature_batch`` out.

Reads ``[ingest] source_topic`` (every partition, assigned by hand: one replica per
source; the consumer group ``idq.<ifo>.ingest`` only keeps the committed progress),
turns each message into one ``feature_batch`` of ``message_seconds`` with
:class:`~idq_common.io.publish.FeaturePublisher` (same keys, timestamps, ``seq``
numbering and partitioning as ``idq produce``), and sends every message it cannot use
to the dead-letter topic with the reason (:mod:`idq_common.io.snax`).

Progress. Offsets are committed only after the batches (and dead letters) produced
from the messages before them are flushed: at-least-once. The commit metadata holds
the publisher's next ``seq`` and the last ingested second, so a restart goes on with
the same numbering (a batch produced again after a crash carries the same ``seq`` and
readers drop it as a duplicate) and keeps refusing seconds it already published.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from idq_common.config import Settings
from idq_common.exceptions import BrokerError
from idq_common.io.kafka.clients import partitions_of
from idq_common.io.publish import FeaturePublisher
from idq_common.io.snax import IngestRejected, JsonFormat, SecondTracker, parse_message
from idq_common.stage.runtime import ServiceRuntime

log = logging.getLogger("idq.ingest")

#: messages read per consume() call; also the most produced between two commits
BATCH = 200


@dataclass
class Progress:
    """What a restart needs: the publisher's next ``seq`` and the last second ingested."""

    seq: int = 0
    last: float | None = None

    def metadata(self) -> str:
        return json.dumps({"seq": self.seq, "last": self.last})

    @classmethod
    def from_committed(cls, committed: list[TopicPartition]) -> Progress:
        """The furthest progress recorded on any partition."""
        out = cls()
        for tp in committed:
            if not tp.metadata:
                continue
            try:
                meta = json.loads(tp.metadata)
                seq, last = int(meta["seq"]), meta["last"]
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring unreadable ingest progress %r", tp.metadata)
                continue
            out.seq = max(out.seq, seq)
            if last is not None and (out.last is None or float(last) > out.last):
                out.last = float(last)
        return out


class IngestStage:
    """The ingest service: one source topic of JSON messages -> the features topic."""

    def __init__(self, settings: Settings, ns: argparse.Namespace) -> None:
        ingest = settings.ingest
        assert ingest is not None  # the loader always builds it
        self.settings = settings
        self.ifo = settings.general.ifo
        self.source_topic = ingest.source_topic
        self.gps_start: float | None = ns.gps_start
        self.gps_end: float | None = ns.gps_end
        self.format = JsonFormat(
            ifo=self.ifo,
            target_channel=settings.samples.target_channel,
            format=ingest.format,
            channel_pattern=ingest.channel_pattern,
            message_seconds=ingest.message_seconds,
            snax_rate=ingest.snax_rate,
        )
        self.runtime = ServiceRuntime.for_stage("ingest", settings, ns.metrics_port)
        self.consumer = Consumer(settings.kafka.consumer_config(f"idq.{self.ifo}.ingest"))
        self.runtime.closers.append(self.consumer.close)
        try:
            self.partitions = partitions_of(self.consumer, self.source_topic)
        except Exception as exc:
            raise BrokerError(f"source topic {self.source_topic!r}: {exc}") from exc
        tps = [TopicPartition(self.source_topic, p) for p in self.partitions]
        committed = self.consumer.committed(tps, timeout=10)
        progress = Progress.from_committed(committed)
        if ns.from_start:
            # re-read the source from its beginning; numbering goes on (readers order by seq)
            log.info("ingest: --from-start: reading %s from its beginning", self.source_topic)
            progress.last = None
            starts = [
                TopicPartition(self.source_topic, p, OFFSET_BEGINNING) for p in self.partitions
            ]
        else:
            starts = [
                TopicPartition(
                    self.source_topic,
                    tp.partition,
                    tp.offset if tp.offset >= 0 else OFFSET_BEGINNING,
                )
                for tp in committed
            ]
        self.progress = progress
        self.tracker = SecondTracker(progress.last)
        self.publisher = FeaturePublisher(
            self.runtime.producer,
            settings.kafka.topics.features,
            self.ifo,
            ingest.source_id,
            batch_seconds=ingest.message_seconds,
            partitioner="round_robin",
            partitions=len(partitions_of(self.consumer, settings.kafka.topics.features)),
            seq=progress.seq,
        )
        self.consumer.assign(starts)
        #: next offset to commit per partition (None: nothing consumed since the last commit)
        self.position: dict[int, int] = {}
        self.accepted = 0
        self.rejected = 0
        self.runtime.metrics.set_ready(True)
        log.info(
            "ingest: %s (%s) -> %s as source %r, seq %d, last second %s",
            self.source_topic,
            ingest.format,
            settings.kafka.topics.features,
            ingest.source_id,
            progress.seq,
            progress.last,
        )

    # -- loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Consume, convert, publish, commit, until stopped (or past ``--gps-end``)."""
        done = False
        while not self.runtime.stop and not done:
            self.runtime.metrics.heartbeat()
            msgs = self.consumer.consume(num_messages=BATCH, timeout=1.0)
            t0 = time.monotonic()
            before = self.accepted
            for msg in msgs:
                if self._handle(msg):
                    done = True
                    break
            if self.position:
                self._commit()
            if self.accepted > before and self.tracker.last is not None:
                end = self.tracker.last + self.format.message_seconds
                self.runtime.metrics.stride_done(
                    self.tracker.last, end, time.monotonic() - t0, self.accepted - before
                )
        log.info(
            "ingest: %d messages published, %d dead-lettered in this run",
            self.accepted,
            self.rejected,
        )
        return 0

    def _handle(self, msg: Message) -> bool:
        """Use one message; True when a bounded run has reached ``--gps-end``."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return False
        part, offset = msg.partition() or 0, msg.offset() or 0
        try:
            parsed = parse_message(msg.value(), self.format)
            if self.gps_end is not None and parsed.start >= self.gps_end:
                return True  # not consumed: a later run goes on from here
            if self.gps_start is not None and parsed.end <= self.gps_start:
                self.position[part] = offset + 1  # before the requested span: skipped
                return False
            self.tracker.check(parsed.start)
        except IngestRejected as exc:
            self.runtime.deadletters.publish_message(exc.reason, msg)
            self.rejected += 1
            self.position[part] = offset + 1
            return False
        self.publisher.publish_batch(parsed.triggers, parsed.start, parsed.end, extra=parsed.extra)
        self.accepted += 1
        self.position[part] = offset + 1
        return self.gps_end is not None and parsed.end >= self.gps_end

    def _commit(self) -> None:
        """Flush what was produced, then commit the offsets behind it (at-least-once)."""
        self.publisher.flush()
        self.runtime.deadletters.flush()
        self.progress.seq = self.publisher.seq
        self.progress.last = self.tracker.last
        meta = self.progress.metadata()
        offsets = [
            TopicPartition(self.source_topic, p, off, metadata=meta)
            for p, off in sorted(self.position.items())
        ]
        self.consumer.commit(offsets=offsets, asynchronous=False)
        self.position.clear()
        if self.tracker.last is not None:
            self.runtime.metrics.lag(
                self.source_topic,
                sum(self._lag(p) for p in self.partitions),
            )

    def _lag(self, partition: int) -> int:
        tp = TopicPartition(self.source_topic, partition)
        _, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=True)
        pos = self.consumer.position([tp])[0].offset
        return max(0, high - pos) if pos >= 0 else 0

    def close(self) -> None:
        """Ordered shutdown (the producer is flushed before the consumer closes)."""
        self.runtime.close()
