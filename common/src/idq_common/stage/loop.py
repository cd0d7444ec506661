"""The loop shared by the stages that read features by stride: train, evaluate, timeseries.

Each stage has its own cadence manager and stream processor (DESIGN.md). The loop:

1. wait until a stride is due (wall clock live; the data watermark in replay);
2. poll every due stride into an umbrella padded on both sides, with segments and gaps;
3. hand the batch to the stage's :meth:`StreamingStage.process`;
4. flush the producer (outputs durable), *then* commit progress (at-least-once);
5. flush old buffers, keeping the history the next stride's windows need.

SIGTERM sets the stop flag: the current stride finishes and is committed, or is
abandoned whole and redone after restart.
"""

from __future__ import annotations

import argparse
import logging
import time
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from confluent_kafka import Consumer
from igwn_segments import segmentlist

from idq_common.config import Settings, StreamSettings
from idq_common.contracts import group_id
from idq_common.data.base import ClassifierData, InMemoryData
from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import ConfigError
from idq_common.gpstime import Clock, WallClock, gps_now, gps_to_kafka_ms
from idq_common.science.features import FeatureSpec
from idq_common.science.quiver import Quiver, build_quiver
from idq_common.stage.runtime import ServiceRuntime
from idq_common.streaming.cadence import CadenceManager, DataClock
from idq_common.streaming.checkpoint import Checkpoint
from idq_common.streaming.kafka_source import KafkaFeatureSource
from idq_common.streaming.processor import Gap, StreamBatch, StreamProcessor
from idq_common.streaming.segments import (
    AllTime,
    DQSegDBSegments,
    SegmentSource,
    StaticSegments,
    TopicSegments,
)

log = logging.getLogger(__name__)

#: data seconds handled per poll at most (a stage catching up works in bounded batches)
MAX_POLL_SECONDS = 64.0


def segment_source(
    settings: Settings, runtime: ServiceRuntime, start: float, wait: float
) -> SegmentSource:
    """The segment source ``[segments]`` names.

    ``wait`` (the stage's own ``stream.timeout``) is how long a query may wait for a
    span the source does not know yet (topic not there yet, DQSegDB lagging).
    """
    seg = settings.segments
    if seg.source == "none":
        return AllTime()
    if seg.source == "static":
        if seg.file is not None:
            return StaticSegments.from_file(seg.file)
        return StaticSegments(seg.segments or ())
    if seg.source == "dqsegdb":
        assert seg.flag is not None and seg.host is not None
        return DQSegDBSegments(seg.flag, seg.host, wait=wait)
    if seg.source == "topic":
        cfg = settings.kafka.consumer_config(
            group_id(settings.general.ifo, runtime.stage, "segments")
        )
        return TopicSegments(
            Consumer(cfg),
            settings.kafka.topics.segments,
            flag=seg.flag,
            start=start,
            wait=wait,
            dead_letter=runtime.deadletters.publish,
        )
    raise ConfigError("segments.source", f"unknown source {seg.source!r}")


class StreamingStage(ABC):
    """Base of the stride-driven stages.

    Parameters
    ----------
    settings : Settings
        The validated configuration.
    ns : argparse.Namespace
        Parsed CLI arguments (``gps_start``, ``gps_end``, ``metrics_port``).
    """

    stage: ClassVar[str]
    #: commit progress after every batch (train commits only when a model is out)
    commit_every_batch: ClassVar[bool] = True
    #: replicas share the strides through the consumer group (pure functions of a stride)
    shared: ClassVar[bool] = False

    def __init__(self, settings: Settings, ns: argparse.Namespace) -> None:
        self.settings = settings
        self.ifo = settings.general.ifo
        self.topics = settings.kafka.topics
        self.stream: StreamSettings = getattr(settings, self.stage).stream
        # data around each stride: the feature window, and the dirty window (a random time
        # near a stride edge must see the target triggers that would exclude it)
        self.pad = max(float(settings.features.window), float(settings.samples.dirty_window))
        self.runtime = ServiceRuntime.for_stage(self.stage, settings, ns.metrics_port)
        self._sorted_for: StreamBatch | None = None
        self._sorted: tuple[TriggerSet, np.ndarray, np.ndarray] | None = None
        self.group = group_id(self.ifo, self.stage)
        self.checkpoint = Checkpoint(
            settings.kafka.consumer_config(self.group), self.topics.features, shared=self.shared
        )
        self.runtime.closers.append(self.checkpoint.close)
        start = self._start_time(ns.gps_start, getattr(ns, "from_start", False))
        self.source = KafkaFeatureSource(
            Consumer(settings.kafka.consumer_config(group_id(self.ifo, self.stage, "reader"))),
            self.topics.features,
            start=start - self.pad,
            idle_timeout=self.stream.timeout,
            dead_letter=self.runtime.deadletters.publish,
        )
        self.runtime.closers.append(self.source.close)
        clock: Clock
        if ns.gps_start is not None:
            clock = DataClock(self.source, start, idle_timeout=self.stream.timeout)
        else:
            clock = WallClock()
        self.runtime.clock = clock
        self.ns = ns
        self._build(start)
        self.runtime.closers.append(self._close_segments)
        self.checkpoint.reassigned()  # the first assignment is what we started from
        log.info(
            "%s: starting at GPS %.0f, stride %g s, delay %g s, %s mode",
            self.stage,
            self.cadence.timestamp,
            self.stream.stride,
            self.stream.delay,
            "replay" if ns.gps_start is not None else "live",
        )

    def _build(self, start: float) -> None:
        """Cadence manager and stream processor starting at ``start``."""
        # a replay reprocesses a span on purpose: it never skips ahead (live mode does,
        # when it falls further behind real time than the configured bound)
        ns = self.ns
        replay = ns.gps_start is not None
        self.cadence = CadenceManager(
            start,
            self.stream.stride,
            self.stream.delay,
            self.runtime.clock,
            max_timestamp=ns.gps_end,
            enforce_integer_strides=self.stream.enforce_integer_strides,
            max_lag_strides=None if replay else self.stream.max_lag_strides,
            max_lag_seconds=None if replay else self.stream.max_lag_seconds,
        )
        # one segment source at a time: a resync replaces it (closing its consumer)
        old = getattr(self, "segments", None)
        if old is not None and hasattr(old, "close"):
            old.close()
        self.segments = segment_source(self.settings, self.runtime, start, self.stream.timeout)
        self.processor = StreamProcessor(
            self.cadence,
            self.source,
            self.segments,
            pad=self.pad,
            max_strides=max(1, round(MAX_POLL_SECONDS / self.stream.stride)),
        )

    def _start_time(self, gps_start: float | None, from_start: bool = False) -> float:
        if from_start and gps_start is not None:
            log.info("%s: reprocessing from GPS %.3f (--from-start)", self.stage, gps_start)
            return gps_start
        resumed = self.checkpoint.load()
        if resumed is not None and (gps_start is None or resumed >= gps_start):
            log.info("%s: resuming from the committed checkpoint at GPS %.3f", self.stage, resumed)
            return resumed
        if gps_start is not None:
            return gps_start
        # live start without history: the most recent whole stride
        stride = self.stream.stride
        return (gps_now() // stride - 1) * stride

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Process strides until stopped or past ``--gps-end``."""
        rt = self.runtime
        rt.metrics.set_ready(self.ready())
        while not rt.stop and not self.cadence.finished:
            rt.metrics.heartbeat()
            self.checkpoint.serve()
            if self.checkpoint.reassigned():
                self._resync()
            if not self.cadence.due():
                self.cadence.wait()
                continue
            t0 = time.monotonic()
            batch = self.processor.poll()
            if rt.stop and not batch.strides:
                break
            for gap in batch.gaps:
                rt.metrics.gap(gap.start, gap.end)
            self.process(batch)
            self._sorted_for = self._sorted = None  # let this batch's data go
            rt.flush()
            if self.commit_every_batch:
                self.commit()
            self.processor.flush()
            if batch.strides:
                start, end = batch.strides[0][0], batch.strides[-1][1]
                rt.metrics.stride_done(start, end, time.monotonic() - t0, n=len(batch.strides))
                rt.metrics.lag(self.topics.features, self.checkpoint.lag())
            rt.metrics.set_ready(self.ready())
        log.info(
            "%s: loop ended at GPS %.3f (%s)",
            self.stage,
            self.cadence.timestamp,
            "stop requested" if rt.stop else "reached --gps-end",
        )
        self.finish()
        return 0

    def _resync(self) -> None:
        """After a rebalance: go back to the earliest progress of the partitions we now hold."""
        resumed = self.checkpoint.load()
        if resumed is not None and resumed < self.cadence.timestamp:
            log.info(
                "%s: rebalanced; going back to GPS %.3f for the partitions taken over",
                self.stage,
                resumed,
            )
            self.source.seek(resumed - self.pad)
            self._build(resumed)

    def _close_segments(self) -> None:
        if hasattr(self.segments, "close"):
            self.segments.close()

    def owns(self, start: float) -> bool:
        """Whether the stride starting at ``start`` is this replica's to do."""
        return self.checkpoint.owns(round(start / self.stream.stride))

    def commit(self) -> None:
        """Record that everything before the cadence timestamp is done."""
        self.checkpoint.save(self.cadence.timestamp, pad=self.pad)

    def ready(self) -> bool:
        """Readiness: the stage can produce useful output (override to require a model)."""
        return True

    def finish(self) -> None:  # noqa: B027  (a hook: most stages have nothing to add)
        """Called once after the loop ends (before close)."""

    def close(self) -> None:
        """Ordered shutdown of every resource."""
        self.runtime.close()

    @abstractmethod
    def process(self, batch: StreamBatch) -> None:
        """Turn one batch of strides into outputs (produced, not yet flushed)."""

    # -- helpers for subclasses ------------------------------------------------------
    def stride_data(self, batch: StreamBatch, start: float, end: float) -> InMemoryData:
        """The batch's data around one stride: ``[start - pad, end + pad)``.

        Work per stride then grows with the stride, not with the batch (a stage
        catching up polls many strides at once). Every window of the stride lies inside,
        so features and samples are the same as from the whole umbrella.
        """
        if self._sorted_for is not batch:
            triggers = batch.umbrella.triggers()
            order = np.argsort(triggers.time, kind="stable")
            self._sorted = (triggers, order, triggers.time[order])
            self._sorted_for = batch
        assert self._sorted is not None
        triggers, order, times = self._sorted
        lo, hi = np.searchsorted(times, [start - self.pad, end + self.pad], side="left")
        return InMemoryData(
            triggers.take(order[lo:hi]), start - self.pad, end + self.pad, segs=batch.umbrella.segs
        )

    def samples_of(
        self,
        data: ClassifierData,
        spec: FeatureSpec,
        segs: segmentlist,
        max_samples: int | None = None,
        rng_seed: int | None = None,
    ) -> Quiver:
        """Glitch and clean samples of ``data`` inside ``segs``, as ``[samples]`` defines them."""
        s = self.settings.samples
        return build_quiver(
            data,
            s.target_channel,
            s.target_bounds,
            s.random_rate,
            s.dirty_bounds,
            s.dirty_window,
            s.seed,
            spec,
            segs=segs,
            max_samples=max_samples,
            rng_seed=rng_seed,
        )

    @staticmethod
    def kafka_ms(gps: float) -> int:
        """Kafka timestamp of data at ``gps``."""
        return gps_to_kafka_ms(gps)

    @staticmethod
    def gap_seconds(gaps: list[Gap]) -> float:
        return float(sum(g.duration for g in gaps))
