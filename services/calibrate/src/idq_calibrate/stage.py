"""The calibrate stage loop.

Calibrate consumes evaluated quivers (a real consumer group on the quivers topic),
keeps a mini-batch per classifier for the model that produced the ranks, and once
``min_new_samples`` new samples have arrived fits a calibration map on the most
recent ``max_samples``, stores it and announces it. Its cadence (how often it
looks for work) comes from ``[calibrate.stream]``, which defaults to
``[evaluate.stream]``.

Determinism (the same calibrations however the stage is interrupted): quivers reach
calibrate in an order that depends on timing (several partitions, evaluate replicas,
restarts), so they are *buffered* and released per classifier in stride order, up to
a watermark: evaluate's committed progress ``P`` once every quivers partition has been
consumed to the end it had when ``P`` was read (evaluate commits only after its
quivers are durable, so every quiver ending at or before ``P`` has then been seen).
A fit happens at the first released quiver that brings ``min_new_samples`` new samples
(and the per-class minimum): a boundary set by the data, never by poll timing.

Offsets and restarts: the committed offset of a partition is the earliest quiver still
needed: buffered, in a classifier's sliding window, or whose samples no announcement
has counted yet. A restarted calibrate replays from there and rebuilds its windows
with the last announced calibration per classifier (read from the calibrations topic):
a quiver ending at or before its ``end`` is part of its window (same model, starting at
or after its ``start``) or already counted (skipped); later quivers are new. So every
evaluated sample is counted exactly once in the announcements' ``new_samples`` (used)
or ``dropped_samples`` (its model was superseded before it was calibrated).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from idq_common.config import Settings
from idq_common.contracts import group_id
from idq_common.exceptions import BrokerError, DecodeError, InvalidMessageError
from idq_common.gpstime import gps_now, gps_to_kafka_ms
from idq_common.io.avro import decode
from idq_common.io.avro.convert import record_to_quiver
from idq_common.io.kafka.clients import committed_offsets, consume_queued
from idq_common.io.store import ArtifactStore
from idq_common.science.calibration import CalibrationMap
from idq_common.science.quiver import Quiver
from idq_common.stage.announcements import (
    Announcements,
    AnnouncementTracker,
    CalibrationAnnouncement,
    ModelAnnouncement,
)
from idq_common.stage.factory import closed_on_error, runtime_for, store_for
from idq_common.stage.runtime import ServiceRuntime
from idq_common.streaming.checkpoint import Checkpoint

log = logging.getLogger(__name__)


class UpstreamProgress(Protocol):
    """Evaluate's committed progress (its checkpoint), read to end a bounded run."""

    def load(self) -> float | None: ...


#: stride starts remembered per classifier to recognise redone strides
DEDUP_WINDOW = 20000


@dataclass
class MiniBatch:
    """Evaluated samples of one classifier, for one model."""

    model_id: str
    ranks: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    #: (partition, offset) of each quiver of the window (what a restart must re-read)
    origins: list[tuple[int, int]] = field(default_factory=list)
    new: int = 0
    #: (partition, offset) of quivers whose samples no calibration has used yet
    unsettled: list[tuple[int, int]] = field(default_factory=list)
    #: samples of superseded models dropped since the last announcement, and their quivers
    dropped: int = 0
    dropped_origins: list[tuple[int, int]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(sum(len(r) for r in self.ranks))

    def add(
        self,
        ranks: np.ndarray,
        labels: np.ndarray,
        span: tuple[float, float],
        origin: tuple[int, int],
        new: bool = True,
    ) -> None:
        """Append a quiver; ``new=False``: restored into the window, counted before."""
        self.ranks.append(ranks)
        self.labels.append(labels)
        self.spans.append(span)
        self.origins.append(origin)
        if new:
            self.new += len(ranks)
            self.unsettled.append(origin)

    def held(self) -> list[tuple[int, int]]:
        """Origins of the quivers this batch still needs (window, uncounted)."""
        return self.origins + self.unsettled + self.dropped_origins

    def prune(self, max_samples: int, history_seconds: float = 0.0, max_history: int = 0) -> None:
        """Keep the newest quivers holding at most ``max_samples`` samples (at least one),
        and beyond those the quivers ending within ``history_seconds`` of the newest, up
        to ``max_history`` samples in all."""
        newest = max((e for _, e in self.spans), default=0.0)
        while len(self.ranks) > 1 and self.size - len(self.ranks[0]) >= max_samples:
            in_history = self.spans[0][1] > newest - history_seconds
            if in_history and self.size <= max(max_history, max_samples):
                break
            self.ranks.pop(0)
            self.labels.pop(0)
            self.spans.pop(0)
            self.origins.pop(0)


def latest_by_end(
    announcements: Iterable[CalibrationAnnouncement],
) -> dict[str, CalibrationAnnouncement]:
    """Per classifier, the announcement reaching furthest (greatest ``end``)."""
    last: dict[str, CalibrationAnnouncement] = {}
    for ann in announcements:
        cur = last.get(ann.classifier)
        if cur is None or (ann.end, ann.created_gps) > (cur.end, cur.created_gps):
            last[ann.classifier] = ann
    return last


def last_calibrations(
    consumer_config: dict[str, Any], topic: str, timeout: float = 10.0
) -> dict[str, CalibrationAnnouncement]:
    """The last announced calibration per classifier (the greatest ``end``), read from
    the beginning of the calibrations topic to its current end."""
    cfg = {**consumer_config, "enable.auto.commit": False}
    consumer = Consumer(cfg)
    found: list[CalibrationAnnouncement] = []
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise BrokerError(f"topic {topic!r} is not available")
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout, cached=False
            )
            if high <= low:
                continue
            tp = TopicPartition(topic, p, low)
            consumer.assign([tp])
            deadline = time.monotonic() + 6 * timeout
            # by position, not message offsets: compaction leaves holes in the offsets
            while consumer.position([tp])[0].offset < high:
                if time.monotonic() > deadline:
                    raise BrokerError(f"cannot read {topic}[{p}] to its end")
                for msg in consumer.consume(1000, timeout=1.0):
                    if msg.error():
                        continue
                    try:
                        kind, record = decode(msg.value() or b"")
                        if kind == CalibrationAnnouncement.kind:
                            found.append(CalibrationAnnouncement.from_record(record))
                    except (DecodeError, InvalidMessageError):
                        continue  # the timeseries stage dead-letters these
    except KafkaException as exc:
        raise BrokerError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()
    return latest_by_end(found)


class CalibrateStage:
    """The calibrate service: quivers in, calibration announcements out."""

    def __init__(
        self,
        settings: Settings,
        runtime: ServiceRuntime,
        consumer: Consumer,
        models: Announcements[ModelAnnouncement],
        upstream: UpstreamProgress,
        store: ArtifactStore,
        gps_end: float | None = None,
        last: Mapping[str, CalibrationAnnouncement] | None = None,
    ) -> None:
        self.settings = settings
        self.ifo = settings.general.ifo
        self.topics = settings.kafka.topics
        self.gps_end = gps_end
        cfg = settings.calibrate
        self.min_new = cfg.min_new_samples
        self.max_samples = cfg.max_samples
        self.grid_points = cfg.grid_points
        self.history_seconds = cfg.history_seconds
        self.max_history = cfg.max_history_samples
        #: the calibration map's health minimum per class
        self.min_per_class = cfg.min_samples_per_class
        self.poll_seconds = float(cfg.stream.stride)
        self.runtime = runtime
        self.clock = runtime.clock
        self.store = store
        self.models = models
        self.known = {c.nickname for c in settings.classifiers}
        self.batches: dict[str, MiniBatch] = {}
        #: the last announced calibration per classifier (restores the windows)
        self.last: dict[str, CalibrationAnnouncement] = dict(last or {})
        #: quivers consumed, not yet released: classifier -> stride start -> (quiver, origin)
        self.buffer: dict[str, dict[float, tuple[Quiver, tuple[int, int]]]] = defaultdict(dict)
        #: every quiver ending at or before this GPS time has been consumed and released
        self.released_to = -np.inf
        #: (evaluate's progress, quivers high watermarks when it was read)
        self._target: tuple[float, dict[int, tuple[int, int]]] | None = None
        self.position: dict[int, int] = {}
        self.consumed = 0
        self.duplicates = 0
        #: stride starts consumed per classifier (duplicates after an evaluate restart)
        self.seen: dict[str, set[float]] = defaultdict(set)
        self.consumer = consumer
        self.consumer.subscribe([self.topics.quivers], on_assign=self._on_assign)
        self.runtime.on_close(self._close_consumer)
        # evaluate's progress (its committed checkpoint): the release watermark, and
        # what tells a bounded run when to end
        self._evaluate_progress = upstream

    @classmethod
    def from_settings(cls, settings: Settings, ns: argparse.Namespace) -> Self:
        """The stage as the settings and command line describe it (Kafka, store)."""
        runtime = runtime_for("calibrate", settings, ns)
        ifo, topics = settings.general.ifo, settings.kafka.topics
        with closed_on_error(runtime):
            upstream = Checkpoint(
                settings.kafka.consumer_config(group_id(ifo, "evaluate")), topics.features
            )
            runtime.on_close(upstream.close)
            models = AnnouncementTracker(
                settings.kafka.consumer_config(group_id(ifo, "calibrate", "models")),
                topics.models,
                ModelAnnouncement,
                deadletter=runtime.deadletters.publish,
            )
            runtime.on_close(models.close)
            last = last_calibrations(
                settings.kafka.consumer_config(group_id(ifo, "calibrate", "restore")),
                topics.calibrations,
            )
            # a calibrate killed with -9 never leaves its group: with the broker's minimum
            # session (6 s, not librdkafka's 45 s) its replacement gets the partitions soon
            consumer = Consumer(
                {
                    "session.timeout.ms": 6000,
                    "heartbeat.interval.ms": 1500,
                    **settings.kafka.consumer_config(group_id(ifo, "calibrate")),
                }
            )
            return cls(
                settings,
                runtime,
                consumer,
                models,
                upstream,
                store_for(settings),
                ns.gps_end,
                last,
            )

    # -- lifecycle ----------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        self.runtime.metrics.set_ready(True)

    def _close_consumer(self) -> None:
        try:
            self._commit()
        finally:
            self.consumer.close()  # leaves the group

    def close(self) -> None:
        """Ordered shutdown."""
        self.runtime.close()

    # -- loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Consume, mini-batch, fit and announce until stopped (or past --gps-end)."""
        log.info(
            "calibrate: min_new_samples=%d max_samples=%d, looking for work every %.0f s",
            self.min_new,
            self.max_samples,
            self.poll_seconds,
        )
        for name, ann in self.last.items():
            log.info(
                "%s: restoring the window of calibration %s (model %s, [%.0f, %.0f))",
                name,
                ann.calibration_id,
                ann.model_id,
                ann.start,
                ann.end,
            )
        next_check = self.clock.now()
        while not self.runtime.stop:
            self.runtime.metrics.heartbeat()
            # what is queued at once; only an empty queue waits, for the first message
            msgs = consume_queued(self.consumer, 500, min(1.0, self.poll_seconds))
            for msg in msgs:
                self._absorb(msg)
            if self.clock.now() >= next_check or msgs:
                next_check = self.clock.now() + self.poll_seconds
                self._advance()
                self.runtime.flush()
                self._commit()
            if self._finished():
                log.info("calibrate: consumed every quiver up to --gps-end %.0f", self.gps_end)
                break
        log.info(
            "calibrate: consumed %d samples in this run (%d duplicate quivers skipped)",
            self.consumed,
            self.duplicates,
        )
        return 0

    def _positions(self, ends: Mapping[int, tuple[int, int]]) -> dict[int, int]:
        """Per assigned partition, how far it is consumed (``ends``: its (low, high)
        watermarks as :meth:`_ends` read them)."""
        assigned = self.consumer.assignment()
        if not assigned:
            return {}
        try:
            committed = {
                tp.partition: tp.offset for tp in committed_offsets(self.consumer, assigned, 5.0)
            }
            out: dict[int, int] = {}
            for tp in self.consumer.position(assigned):
                low = ends.get(tp.partition, (0, 0))[0]
                # a partition nothing was read from has no position (negative): its start counts
                out[tp.partition] = max(
                    low,
                    tp.offset,
                    self.position.get(tp.partition, -1),
                    committed.get(tp.partition, -1),
                )
        except KafkaException as exc:
            raise BrokerError(f"cannot read {self.topics.quivers} positions: {exc}") from exc
        return out

    def _ends(self) -> dict[int, tuple[int, int]]:
        """(low, high) watermarks of every assigned partition, read now.

        A round trip to the partition leader, queued behind a fetch waiting there for
        data (up to ``fetch.wait.max.ms``): read once per release target, not at every
        check of whether the consumer has got there.
        """
        assigned = self.consumer.assignment()
        try:
            return {
                tp.partition: self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                for tp in assigned
            }
        except KafkaException as exc:
            raise BrokerError(f"cannot read {self.topics.quivers} watermarks: {exc}") from exc

    def _advance(self) -> None:
        """Move the release watermark (see the module) and release what it passed."""
        if self._target is None:
            upstream = self._evaluate_progress.load()
            if upstream is None or upstream <= self.released_to:
                return
            ends = self._ends()
            if not ends:
                return
            self._target = (upstream, ends)
        upstream, ends = self._target
        positions = self._positions(ends)
        if all(positions.get(p, -1) >= high for p, (_, high) in ends.items()):
            self._target = None
            self._release(upstream)

    def _finished(self) -> bool:
        """A bounded run ends once evaluate has committed --gps-end (it will produce no
        more quivers) and everything up to it is released: a release at evaluate's
        progress ``P`` waited until every quivers partition was consumed to the end it
        had after ``P`` was read, so nothing is left to wait for (another turn would
        only wait out a poll timeout for a quiver that cannot come)."""
        return self.gps_end is not None and self.released_to >= self.gps_end

    def _absorb(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        part, offset = msg.partition() or 0, msg.offset() or 0
        self.position[part] = offset + 1
        try:
            kind, record = decode(msg.value() or b"")
            if kind != "quiver":
                raise InvalidMessageError(f"expected a quiver, got {kind}")
            quiver = record_to_quiver(record)
            if quiver.classifier not in self.known:
                raise InvalidMessageError(f"unknown classifier {quiver.classifier!r}")
        except (DecodeError, InvalidMessageError) as exc:
            self.runtime.deadletters.publish_message(f"{type(exc).__name__}: {exc}", msg)
            return
        name = quiver.classifier
        seen = self.seen[name]
        if quiver.start in seen:
            # evaluate redid a stride after a restart (at-least-once): first one wins
            self.duplicates += 1
            log.info(
                "%s: quiver of stride %.0f already consumed: skipped as a duplicate",
                name,
                quiver.start,
            )
            return
        seen.add(quiver.start)
        if len(seen) > 2 * DEDUP_WINDOW:
            for old in sorted(seen)[:DEDUP_WINDOW]:
                seen.discard(old)
        if quiver.end <= self.released_to:
            # cannot happen while evaluate commits after producing: take it, but say so
            log.warning("%s: quiver of stride %.0f arrived after its release", name, quiver.start)
            self._take(quiver, (part, offset))
            return
        self.buffer[name][quiver.start] = (quiver, (part, offset))

    def _release(self, upto: float) -> None:
        """Take the buffered quivers ending at or before ``upto``, per classifier in
        stride order (fitting where the data says), and move the watermark there."""
        for name in sorted(self.buffer):
            pending = self.buffer[name]
            for start in sorted(s for s, (q, _) in pending.items() if q.end <= upto):
                quiver, origin = pending.pop(start)
                self._take(quiver, origin)
        self.released_to = upto

    def _take(self, quiver: Quiver, origin: tuple[int, int]) -> None:
        """Add one quiver to its classifier's batch; fit if that makes it ready."""
        assert quiver.classifier is not None and quiver.ranks is not None
        name, model_id = quiver.classifier, quiver.model_id or ""
        last = self.last.get(name)
        restored = last is not None and quiver.end <= last.end
        if restored:
            assert last is not None
            if model_id != last.model_id or quiver.start < last.start:
                return  # counted by an announcement already, not in its window
        batch = self.batches.get(name)
        if batch is None or batch.model_id != model_id:
            fresh = MiniBatch(model_id)
            if batch is not None:
                # ranks of another model cannot calibrate this one: its new samples are
                # dropped, counted in the next announcement (their quivers held till then)
                log.info(
                    "%s: model %s -> %s; dropping %d samples of the old model",
                    name,
                    batch.model_id,
                    model_id,
                    batch.new,
                )
                fresh.dropped = batch.dropped + batch.new
                fresh.dropped_origins = batch.dropped_origins + batch.unsettled
            batch = self.batches[name] = fresh
        batch.add(quiver.ranks, quiver.labels, (quiver.start, quiver.end), origin, not restored)
        if restored:
            return
        n_glitch = int(quiver.labels.sum())
        self.consumed += len(quiver.labels)
        log.info(
            "calibrate: consumed %s stride [%.0f, %.0f): %d samples, %d glitch (model %s)",
            name,
            quiver.start,
            quiver.end,
            len(quiver.labels),
            n_glitch,
            model_id,
        )
        self.runtime.metrics.samples(name, "glitch", n_glitch)
        self.runtime.metrics.samples(name, "clean", len(quiver.labels) - n_glitch)
        self.runtime.metrics.accumulated(name, batch.new)
        self._fit_if_ready(name, batch)

    def _commit(self) -> None:
        """Commit, per partition, the earliest quiver still held (buffered, in a window,
        not yet counted), else the consumed position."""
        held: dict[int, list[int]] = defaultdict(list)
        for pending in self.buffer.values():
            for _, (part, offset) in pending.values():
                held[part].append(offset)
        for batch in self.batches.values():
            for part, offset in batch.held():
                held[part].append(offset)
        offsets = [
            TopicPartition(self.topics.quivers, part, min(held[part]) if held[part] else pos)
            for part, pos in self.position.items()
        ]
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                raise BrokerError(f"cannot commit {self.topics.quivers} offsets: {exc}") from exc

    # -- fitting --------------------------------------------------------------------
    def _fit_if_ready(self, name: str, batch: MiniBatch) -> None:
        if batch.new < self.min_new:
            return
        n_glitch = int(sum(lab.sum() for lab in batch.labels))
        n_clean = batch.size - n_glitch
        if min(n_glitch, n_clean) < self.min_per_class:
            # a map from fewer samples would only be published as unhealthy (OK = 0)
            log.info(
                "%s: %d new samples, but %d glitch / %d clean < %d per class: waiting",
                name,
                batch.new,
                n_glitch,
                n_clean,
                self.min_per_class,
            )
            return
        batch.prune(self.max_samples, self.history_seconds, self.max_history)
        self._fit(name, batch)

    def _fit(self, name: str, batch: MiniBatch) -> None:
        t0 = time.monotonic()
        ranks = np.concatenate(batch.ranks)
        labels = np.concatenate(batch.labels)
        glitch, clean = ranks[labels == 1], ranks[labels == 0]
        model = self._model_announcement(name, batch.model_id)
        cmap = CalibrationMap.fit(
            glitch, clean, grid_points=self.grid_points, min_samples=self.min_per_class
        )
        healthy, reason = cmap.health()
        # the smallest FAP this map can give: what a FAP threshold below it cannot reach
        fap_floor = float(cmap.fap(np.ones(1))[0])
        start = min(s for s, _ in batch.spans)
        end = max(e for _, e in batch.spans)
        ref = self.store.put(
            "calibration",
            cmap.to_json().encode(),
            {
                "classifier": name,
                "model_id": batch.model_id,
                "n_glitch": len(glitch),
                "n_clean": len(clean),
                "start": start,
                "end": end,
            },
        )
        created = gps_now()
        ann = CalibrationAnnouncement(
            ifo=self.ifo,
            classifier=name,
            calibration_id=ref.id,
            model_id=batch.model_id,
            model_uri=model.uri if model else "",
            model_sha256=model.sha256 if model else "",
            uri=ref.uri,
            sha256=ref.sha256,
            created_gps=created,
            start=start,
            end=end,
            n_glitch=len(glitch),
            n_clean=len(clean),
            healthy=bool(healthy),
            fap_floor=fap_floor,
            metrics={
                "bandwidth_glitch": cmap.bandwidth_glitch,
                "bandwidth_clean": cmap.bandwidth_clean,
                # samples first used by this calibration: summed over announcements
                # they count what calibrate consumed (each exactly once)
                "new_samples": float(batch.new),
                # samples of superseded models dropped since the last announcement
                "dropped_samples": float(batch.dropped),
            },
        )
        self.runtime.produce(
            self.topics.calibrations,
            ann.kind,
            ann.to_record(),
            key=name,
            timestamp_ms=gps_to_kafka_ms(end),
        )
        self.runtime.flush()
        batch.unsettled.clear()
        batch.dropped_origins.clear()
        batch.new = batch.dropped = 0
        self.last[name] = ann
        self.runtime.metrics.set_calibration(name, ref.id, created)
        self.runtime.metrics.calibration_published(name)
        self.runtime.metrics.accumulated(name, 0)
        log.info(
            "%s: calibration %s for model %s from %d glitch + %d clean samples [%.0f, %.0f) "
            "(FAP floor %.2g) in %.2f s%s",
            name,
            ref.id,
            batch.model_id,
            len(glitch),
            len(clean),
            start,
            end,
            fap_floor,
            time.monotonic() - t0,
            "" if healthy else f" (UNHEALTHY: {reason})",
        )

    def _model_announcement(self, name: str, model_id: str) -> ModelAnnouncement | None:
        """The announcement of the model whose ranks are calibrated (for its uri and sha256)."""
        # an announcement never changes: only a model not seen yet is waited for (a
        # refresh with a timeout waited it out at every fit: 0.5 s per calibration)
        if model_id not in self.models.by_id:
            self.models.refresh()
        if model_id not in self.models.by_id:
            self.models.wait_for(lambda: model_id in self.models.by_id, timeout=5.0)
        return self.models.by_id.get(model_id)
