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

import ctypes
import ctypes.util
import functools
import gc
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
from igwn_segments import segmentlist

from idq_common.config import Settings, StreamSettings
from idq_common.data.base import ClassifierData, InMemoryData
from idq_common.data.triggers import TriggerSet
from idq_common.exceptions import StopRequested
from idq_common.gpstime import Clock, gps_to_kafka_ms
from idq_common.progress import Progress as ProgressLine
from idq_common.science.features import FeatureSpec, preload_kernels
from idq_common.science.quiver import Quiver, build_quiver
from idq_common.stage.runtime import ServiceRuntime
from idq_common.streaming.cadence import CadenceManager
from idq_common.streaming.processor import Gap, SpanSource, StreamBatch, StreamProcessor
from idq_common.streaming.segments import AllTime, SegmentSource

log = logging.getLogger(__name__)

#: data seconds handled per poll at most (a stage catching up works in bounded batches)
MAX_POLL_SECONDS = 64.0
#: seconds a shared replica holding no partition waits for an assignment before going on
UNOWNED_WAIT_S = 30.0
#: wall seconds between two updates of the consumer-lag metric (round trips to the
#: broker: at every poll they cost a replay ~1.5 s of 1,800 s at 100 channels)
LAG_EVERY_S = 5.0
#: trigger rows read per poll at most: ~62 s at 1,000 channels, ~21 s at 3,000 (16 Hz
#: each); with the pad and the copies a poll makes, a few hundred MB at most
MAX_POLL_ROWS = 1_000_000


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the heap pages freed by a poll back to the OS (glibc ``malloc_trim(0)``).

    A poll allocates and frees hundreds of MB of arrays; glibc keeps freed heap pages
    (and after freeing a large mmapped array it raises its mmap threshold, so later
    arrays of that size come from the heap too), so RSS ratcheted up to the largest
    poll's high-water mark and stayed there, growing with fragmentation. One call per
    poll costs a walk of the free lists (well under a millisecond here).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class Progress(Protocol):
    """Where a stage's progress is committed (:class:`~idq_common.streaming.checkpoint.Checkpoint`)."""

    def load(self) -> float | None: ...

    def load_metadata(self) -> dict[str, Any] | None: ...

    def save(
        self, next_gps: float, pad: float = 0.0, extra: dict[str, Any] | None = None
    ) -> None: ...

    def serve(self, timeout: float = 0.0) -> None: ...

    def reassigned(self) -> bool: ...

    def owns(self, stride_index: int, start: float | None = None) -> bool: ...

    def lag(self) -> int: ...


class FeatureSource(SpanSource, Protocol):
    """Features by GPS span that can be re-read from an earlier time (after a rebalance)."""

    def seek(self, gps: float) -> None: ...


def stage_pad(settings: Settings) -> float:
    """Seconds of data a stride needs on each side.

    The feature window, and the dirty window (a random time near a stride edge must see
    the target triggers that would exclude it).
    """
    return max(float(settings.features.window), float(settings.samples.dirty_window))


@dataclass
class StageParts:
    """What a stride-driven stage is built from.

    :func:`idq_common.stage.factory.streaming_parts` builds them from the settings
    (Kafka checkpoint and source, wall or data clock); a unit test builds them in
    memory.

    Parameters
    ----------
    runtime : ServiceRuntime
        Producer, metrics, dead letters, stop flag, ordered shutdown.
    checkpoint : Progress
        Committed progress (and, shared, which strides are this replica's).
    source : FeatureSource
        Features by span.
    clock : Clock
        The stage's now: wall clock live, the data watermark in replay, manual in tests.
    start : float
        GPS time of the first stride.
    end : float, optional
        Stop after this GPS time (a bounded run).
    replay : bool
        A replay never skips ahead, however far behind the clock it is.
    segments : callable
        ``start -> SegmentSource``; called again when a rebalance rebuilds the processor.
    """

    runtime: ServiceRuntime
    checkpoint: Progress
    source: FeatureSource
    clock: Clock
    start: float
    end: float | None = None
    replay: bool = False
    segments: Callable[[float], SegmentSource] = field(default=lambda start: AllTime())


@contextmanager
def loading_kernels(modules: Sequence[str] = ()) -> Iterator[threading.Thread]:
    """Build a stage while the feature kernels load in a background thread.

    For a stage that builds features (numba and the cached kernels, ~1 CPU s, and
    ``modules`` it imports on its first stride): the thread does that work while the
    main one waits on Kafka at start (:func:`~idq_common.science.features.preload_kernels`).
    Hand the thread to the stage (``stage._preload``): :meth:`StreamingStage.close`
    joins it. A failed start joins it before raising, so the process never exits in
    the middle of it.
    """
    preload = preload_kernels(modules)
    try:
        yield preload
    except BaseException:
        preload.join()
        raise


class StreamingStage(ABC):
    """Base of the stride-driven stages.

    Parameters
    ----------
    settings : Settings
        The validated configuration.
    parts : StageParts
        Runtime, checkpoint, source, clock and span (see :class:`StageParts`).
    """

    stage: ClassVar[str]
    #: commit progress after every batch (train commits only when a model is out)
    commit_every_batch: ClassVar[bool] = True
    #: replicas share the strides through the consumer group (pure functions of a stride)
    shared: ClassVar[bool] = False

    def __init__(self, settings: Settings, parts: StageParts) -> None:
        self.settings = settings
        self.ifo = settings.general.ifo
        self.topics = settings.kafka.topics
        self.stream: StreamSettings = getattr(settings, self.stage).stream
        self.pad = stage_pad(settings)
        self.runtime = parts.runtime
        #: the feature-kernel preload thread (:func:`loading_kernels`), joined at close
        self._preload: threading.Thread | None = None
        self.checkpoint = parts.checkpoint
        self.source = parts.source
        self.clock = parts.clock
        self.runtime.clock = parts.clock
        self.end = parts.end
        self.replay = parts.replay
        self._segment_source = parts.segments
        self.segments: SegmentSource | None = None
        self._sorted_for: StreamBatch | None = None
        self._sorted: TriggerSet | None = None
        self._unowned_since: float | None = None
        self._lag_due = -math.inf  # the consumer-lag metric: at the first poll, then rarely
        self._build(parts.start)
        self.runtime.on_close(self._close_segments)
        self.checkpoint.reassigned()  # the first assignment is what we started from
        log.info(
            "%s: starting at GPS %.0f, stride %g s, delay %g s, %s mode",
            self.stage,
            self.cadence.timestamp,
            self.stream.stride,
            self.stream.delay,
            "replay" if self.replay else "live",
        )
        # a bounded run (--gps-end) logs strides done, rate and ETA every 30 s
        self._progress: ProgressLine | None = None
        if self.end is not None:
            total = max(0.0, (self.end - self.cadence.timestamp) / self.stream.stride)
            self._progress = ProgressLine(self.stage, total, every=30.0, emit=log.info)

    def _build(self, start: float) -> None:
        """Cadence manager and stream processor starting at ``start``."""
        # a replay reprocesses a span on purpose: it never skips ahead (live mode does,
        # when it falls further behind real time than the configured bound)
        replay = self.replay
        self.cadence = CadenceManager(
            start,
            self.stream.stride,
            self.stream.delay,
            self.clock,
            max_timestamp=self.end,
            enforce_integer_strides=self.stream.enforce_integer_strides,
            max_lag_strides=None if replay else self.stream.max_lag_strides,
            max_lag_seconds=None if replay else self.stream.max_lag_seconds,
        )
        # one segment source at a time: a resync replaces it (closing its consumer)
        self._close_segments()
        self.segments = self._segment_source(start)
        self.processor = StreamProcessor(
            self.cadence,
            self.source,
            self.segments,
            pad=self.pad,
            max_strides=max(1, round(MAX_POLL_SECONDS / self.stream.stride)),
            max_rows=MAX_POLL_ROWS,
        )

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> int:
        """Process strides until stopped or past ``--gps-end``."""
        rt = self.runtime
        rt.metrics.set_ready(self.ready())
        # start-up's objects (modules, numba, sklearn, settings, clients: ~130-220 k)
        # live as long as the process: out of the collector's full passes, which
        # scanned them all again a few times per replay (0.1-0.25 CPU s per 600 s at
        # 1,000 channels); given back after the loop (a test process runs many loops)
        gc.freeze()
        try:
            self._strides()
        finally:
            gc.unfreeze()
        log.info(
            "%s: loop ended at GPS %.3f (%s)",
            self.stage,
            self.cadence.timestamp,
            "stop requested" if rt.stop else "reached --gps-end",
        )
        self.finish()
        return 0

    def _strides(self) -> None:
        """The loop itself: poll, process, flush, commit until stopped or past the end."""
        rt = self.runtime
        while not rt.stop and not self.cadence.finished:
            rt.metrics.heartbeat()
            self.checkpoint.serve()
            if self.checkpoint.reassigned():
                self._resync()
            if self._between_assignments():
                continue
            if not self.cadence.due():
                self.cadence.wait()
                continue
            t0 = time.monotonic()
            try:
                batch = self.processor.poll()
            except StopRequested:
                break  # nothing of the stride was produced or committed
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
            strides = batch.strides
            del batch  # this poll's umbrella, before its memory is handed back
            release_freed_memory()
            if strides:
                start, end = strides[0][0], strides[-1][1]
                rt.metrics.stride_done(start, end, time.monotonic() - t0, n=len(strides))
                if self._progress is not None:
                    self._progress.advance(len(strides))
                if time.monotonic() >= self._lag_due:
                    self._lag_due = time.monotonic() + LAG_EVERY_S
                    rt.metrics.lag(self.topics.features, self.checkpoint.lag())
            rt.metrics.set_ready(self.ready())

    def _between_assignments(self) -> bool:
        """Shared and holding no partition (mid-rebalance): wait for the assignment.

        With the eager protocol every member holds nothing between the revoke and the
        assignment; strides polled then would be skipped and redone after it. Bounded
        (``UNOWNED_WAIT_S`` per episode): a replica beyond the partition count goes on,
        doing nothing, as before.
        """
        owned = getattr(self.checkpoint, "owned", None)  # a Checkpoint (fakes have none)
        if not self.shared or owned is None or owned:
            self._unowned_since = None
            return False
        now = time.monotonic()
        if self._unowned_since is None:
            self._unowned_since = now
        if now - self._unowned_since >= UNOWNED_WAIT_S:
            return False
        self.checkpoint.serve(0.2)
        return True

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
        close = getattr(self.segments, "close", None)
        if close is not None:
            close()

    def owns(self, start: float) -> bool:
        """Whether the stride starting at ``start`` is this replica's to do."""
        return self.checkpoint.owns(round(start / self.stream.stride), start)

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
        if self._preload is not None:
            self._preload.join()  # long done after a run; at most ~1 s after a quick stop

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
            if not triggers.is_time_sorted:
                # once per batch; the stream's umbrella is in time order already (then
                # each stride is a view of it, not a gather of its rows)
                triggers = triggers.take(np.argsort(triggers.time, kind="stable"))
            self._sorted = triggers
            self._sorted_for = batch
        assert self._sorted is not None
        triggers = self._sorted
        lo, hi = np.searchsorted(triggers.time, [start - self.pad, end + self.pad], side="left")
        return InMemoryData(
            triggers.slice_rows(int(lo), int(hi)),
            start - self.pad,
            end + self.pad,
            segs=batch.umbrella.segs,
        )

    def samples_of(
        self,
        data: ClassifierData,
        spec: FeatureSpec | None,
        segs: segmentlist,
        max_samples: int | None = None,
        rng_seed: int | None = None,
        random_rate: float | None = None,
    ) -> Quiver:
        """Glitch and clean samples of ``data`` inside ``segs``, as ``[samples]`` defines them
        (with their feature vectors for ``spec``; none for None; ``random_rate``: clean
        samples per second instead of ``[samples] random_rate``)."""
        s = self.settings.samples
        return build_quiver(
            data,
            s.target_channel,
            s.target_bounds,
            s.random_rate if random_rate is None else random_rate,
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
