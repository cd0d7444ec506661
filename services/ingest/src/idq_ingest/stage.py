"""The ingest loop: SNAX/sgnax JSON in, ``feature_batch`` out.

Reads ``[ingest] source_topic`` (every partition, assigned by hand: one replica; the
consumer group ``idq.<ifo>.ingest`` only keeps the committed progress) and turns each
message into one ``feature_batch`` of ``message_seconds`` with
:class:`~idq_common.io.publish.FeaturePublisher` (same keys, timestamps, ``seq``
numbering and partitioning as ``idq produce``). Every message it cannot use goes to
the dead-letter topic with the reason (:mod:`idq_common.io.snax`).

Jobs. A site splits its channels over several feature-extractor jobs, each sending its
own message per second on the same topic, told apart by the message key. Each job is
its own feature *source* (``<source_id>`` for an unkeyed job, ``<source_id>.<key>``
otherwise) with its own ``seq`` numbering and its own duplicate / out-of-order check;
readers wait until every source is complete, so a stalled job shows as missing data.

Progress. Offsets are committed only after the batches (and dead letters) produced
from the messages before them are flushed: at-least-once. The commit metadata holds
each job's next ``seq`` and last second, so a restart goes on with the same numbering
(a batch produced again after a crash carries the same ``seq``, and readers drop it)
and keeps refusing seconds already published.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Self

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from idq_common.config import Settings
from idq_common.contracts import group_id
from idq_common.exceptions import BrokerError
from idq_common.io.kafka.clients import committed_offsets, partitions_of
from idq_common.io.publish import FeaturePublisher, partitioning
from idq_common.io.snax import IngestRejected, JsonFormat, SecondTracker, parse_message
from idq_common.stage.factory import closed_on_error, runtime_for
from idq_common.stage.runtime import ServiceRuntime

log = logging.getLogger(__name__)

#: messages read per consume() call; also the most produced between two commits
BATCH = 200
#: a job key (message key) becomes part of a source id
_JOB = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def load_progress(committed: list[TopicPartition]) -> dict[str, tuple[int, float | None]]:
    """``{job: (next seq, last second)}``: the furthest recorded on any partition."""
    out: dict[str, tuple[int, float | None]] = {}
    for tp in committed:
        if not tp.metadata:
            continue
        try:
            jobs = json.loads(tp.metadata)["jobs"]
            items = [
                (str(j), int(v[0]), None if v[1] is None else float(v[1])) for j, v in jobs.items()
            ]
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            log.warning("ignoring unreadable ingest progress %r", tp.metadata)
            continue
        for job, seq, last in items:
            old_seq, old_last = out.get(job, (0, None))
            newest = (
                last if old_last is None or (last is not None and last > old_last) else old_last
            )
            out[job] = (max(seq, old_seq), newest)
    return out


@dataclass
class Job:
    """One feature-extractor job: its publisher (a feature source) and its last second."""

    publisher: FeaturePublisher
    tracker: SecondTracker


class IngestStage:
    """The ingest service: one source topic of JSON messages -> the features topic."""

    def __init__(
        self,
        settings: Settings,
        runtime: ServiceRuntime,
        consumer: Consumer,
        *,
        gps_start: float | None = None,
        gps_end: float | None = None,
        from_start: bool = False,
    ) -> None:
        """Take the runtime and the source-topic consumer as parts (built by
        :meth:`from_settings` for the CLI); positions the consumer from the committed
        progress (or the topic's beginning with ``from_start``)."""
        ingest = settings.ingest
        assert ingest is not None  # the loader always builds it
        self.settings = settings
        self.ifo = settings.general.ifo
        self.source_topic = ingest.source_topic
        self.source_id = ingest.source_id
        self.gps_start = gps_start
        self.gps_end = gps_end
        self.format = JsonFormat(
            ifo=self.ifo,
            target_channel=settings.samples.target_channel,
            format=ingest.format,
            channel_pattern=ingest.channel_pattern,
            message_seconds=ingest.message_seconds,
            snax_rate=ingest.snax_rate,
        )
        self.runtime = runtime
        self.consumer = consumer
        try:
            self.partitions = partitions_of(self.consumer, self.source_topic)
            self.feature_partitions = len(
                partitions_of(self.consumer, settings.kafka.topics.features)
            )
        except BrokerError as exc:
            raise BrokerError(f"{exc} (ingest.source_topic / kafka.topics.features)") from exc
        tps = [TopicPartition(self.source_topic, p) for p in self.partitions]
        committed = self._committed(tps)
        self.jobs: dict[str, Job] = {}
        for job, (seq, last) in load_progress(committed).items():
            # --from-start re-reads the source; numbering goes on (readers order by seq)
            self._job(job, seq, None if from_start else last)
        if from_start:
            log.info("ingest: --from-start: reading %s from its beginning", self.source_topic)
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
        self.consumer.assign(starts)
        #: next offset to commit per partition (cleared at each commit)
        self.position: dict[int, int] = {}
        self.accepted = 0
        self.rejected = 0
        #: a bounded run has seen data at or after --gps-end
        self.past_end = False
        #: partitions that reached --gps-end (nothing after is consumed in this run)
        self.ended: set[int] = set()
        #: monotonic times of the first message read and the last commit (throughput)
        self.first_message: float | None = None
        self.last_commit: float | None = None
        #: the same in process CPU seconds (every thread, librdkafka's included): what a
        #: throughput figure means on a shared machine, where wall time measures the others
        self.first_message_cpu = self.last_commit_cpu = 0.0
        self.runtime.metrics.set_ready(True)
        log.info(
            "ingest: %s (%s) -> %s, %d job(s) known",
            self.source_topic,
            ingest.format,
            settings.kafka.topics.features,
            len(self.jobs),
        )

    @classmethod
    def from_settings(cls, settings: Settings, ns: argparse.Namespace) -> Self:
        """The stage as the settings and command line describe it."""
        runtime = runtime_for("ingest", settings, ns)
        with closed_on_error(runtime):
            consumer = Consumer(
                settings.kafka.consumer_config(group_id(settings.general.ifo, "ingest"))
            )
            runtime.on_close(consumer.close)
            return cls(
                settings,
                runtime,
                consumer,
                gps_start=ns.gps_start,
                gps_end=ns.gps_end,
                from_start=ns.from_start,
            )

    def _committed(self, tps: list[TopicPartition], timeout: float = 60.0) -> list[TopicPartition]:
        """The group's committed offsets (retried while the coordinator is loading)."""
        return committed_offsets(self.consumer, tps, retry_for=timeout)

    def _job(self, job: str, seq: int = 0, last: float | None = None) -> Job:
        found = self.jobs.get(job)
        if found is None:
            source = self.source_id if not job else f"{self.source_id}.{job}"
            publisher = FeaturePublisher(
                self.runtime.producer,
                self.settings.kafka.topics.features,
                self.ifo,
                source,
                batch_seconds=self.format.message_seconds,
                **partitioning(self.settings.kafka, self.feature_partitions),
                seq=seq,
            )
            found = self.jobs[job] = Job(publisher, SecondTracker(last))
            log.info("ingest: job %r -> source %r from seq %d", job, source, seq)
        return found

    # -- loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Consume, convert, publish, commit, until stopped (or past ``--gps-end``)."""
        done = False
        while not self.runtime.stop and not done:
            self.runtime.metrics.heartbeat()
            msgs = self._poll()
            t0 = time.monotonic()
            before, last = self.accepted, None
            for msg in msgs:
                outcome = self._handle(msg)
                if outcome is True:
                    done = True
                    break
                if isinstance(outcome, float):
                    last = outcome
            if self.position:
                self._commit()
            if not msgs and self.gps_end is not None and (self.past_end or self._all_done()):
                # a bounded run ends drained: every partition read to its end, and the
                # data reached --gps-end (a job whose last seconds were refused stays short)
                done = True
            if last is not None:
                end = last + self.format.message_seconds
                n = self.accepted - before
                self.runtime.metrics.stride_done(last, end, time.monotonic() - t0, n)
        busy = (
            self.last_commit - self.first_message
            if self.first_message is not None and self.last_commit is not None
            else 0.0
        )
        busy_cpu = max(0.0, self.last_commit_cpu - self.first_message_cpu) if busy else 0.0
        log.info(
            "ingest: %d messages published, %d dead-lettered in this run; "
            "%.3f s from the first message to the last commit (%.3f CPU s)",
            self.accepted,
            self.rejected,
            busy,
            busy_cpu,
        )
        return 0

    def _poll(self) -> list[Message]:
        """Up to BATCH messages: what is already fetched, at once; else wait up to 1 s
        for the next one (and take what came with it).

        Not ``consume(BATCH, timeout=1.0)``: that waits for BATCH messages, and a backlog
        of large messages (350 kB per job-second at 1,000 channels) never holds BATCH in
        librdkafka's fetch queue (64 MB by default), so every call sat out its timeout.
        """
        msgs = self.consumer.consume(num_messages=BATCH, timeout=0)
        if msgs:
            return list(msgs)
        first = self.consumer.consume(num_messages=1, timeout=1.0)
        if not first:
            return []
        return [*first, *self.consumer.consume(num_messages=BATCH - 1, timeout=0)]

    def _handle(self, msg: Message) -> bool | float:
        """Use one message; its start when published, else False."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return False
        if self.first_message is None:
            self.first_message = time.monotonic()
            self.first_message_cpu = time.process_time()
        part, offset = msg.partition() or 0, msg.offset() or 0
        if part in self.ended:
            return False  # this partition reached --gps-end: leave the rest for a later run
        try:
            key = msg.key()
            job = key.decode("utf-8", "replace") if key else ""
            if job and not _JOB.match(job):
                raise IngestRejected("bad_envelope", f"message key {job[:80]!r} is not a job name")
            parsed = parse_message(msg.value(), self.format)
            if self.gps_end is not None and parsed.start >= self.gps_end:
                # not consumed (a later run reads it); other jobs may still be behind
                self.past_end = True
                self.ended.add(part)
                return False
            if self.gps_start is not None and parsed.end <= self.gps_start:
                self.position[part] = offset + 1  # before the requested span: skipped
                return False
            target = self._job(job)
            target.tracker.check(parsed.start)
        except IngestRejected as exc:
            self.runtime.deadletters.publish_message(exc.reason, msg)
            self.rejected += 1
            self.position[part] = offset + 1
            return False
        target.publisher.publish_batch(
            parsed.triggers, parsed.start, parsed.end, extra=parsed.extra
        )
        self.accepted += 1
        self.position[part] = offset + 1
        return parsed.start

    def _all_done(self) -> bool:
        """Every known job has reached ``--gps-end``."""
        assert self.gps_end is not None
        step = self.format.message_seconds
        return bool(self.jobs) and all(
            j.tracker.last is not None and j.tracker.last + step >= self.gps_end
            for j in self.jobs.values()
        )

    def _commit(self) -> None:
        """Flush what was produced, then commit the offsets behind it (at-least-once)."""
        for job in self.jobs.values():
            job.publisher.flush()
        self.runtime.deadletters.flush()
        meta = json.dumps(
            {"jobs": {name: [j.publisher.seq, j.tracker.last] for name, j in self.jobs.items()}}
        )
        offsets = [
            TopicPartition(self.source_topic, p, off, metadata=meta)
            for p, off in sorted(self.position.items())
        ]
        self.consumer.commit(offsets=offsets, asynchronous=False)
        self.last_commit = time.monotonic()
        self.last_commit_cpu = time.process_time()
        self.position.clear()
        lag = 0
        for p in self.partitions:
            tp = TopicPartition(self.source_topic, p)
            _, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=True)
            pos = self.consumer.position([tp])[0].offset
            lag += max(0, high - pos) if pos >= 0 else 0
        self.runtime.metrics.lag(self.source_topic, lag)

    def close(self) -> None:
        """Ordered shutdown (the producer is flushed before the consumer closes)."""
        self.runtime.close()
