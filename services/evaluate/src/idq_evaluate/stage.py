"""The evaluate stage loop.

Per stride: glitch samples (target triggers in bounds) and clean samples (random
times away from dirty target triggers) inside the stride's valid segments, at most
``max_samples`` of them, ranked by the newest announced model of each classifier
(swapped in live, sha256 checked), published as one evaluated quiver per classifier
and stride. One quiver per stride keeps the output idempotent: a stride evaluated
twice (after a restart) yields the same key and content whatever the polling did.
Strides evaluated before a classifier has any model are counted and logged, not
published: there is nothing to calibrate with them.
"""

from __future__ import annotations

import argparse
import logging
from typing import Self

import numpy as np
from igwn_segments import segment, segmentlist

from idq_common.config import Settings
from idq_common.io.avro.convert import quiver_to_record
from idq_common.science.quiver import Quiver
from idq_common.science.stride import rank_grid
from idq_common.stage.factory import closed_on_error, streaming_parts
from idq_common.stage.loop import StageParts, StreamingStage, loading_kernels
from idq_common.stage.models import ModelBook
from idq_common.streaming.processor import StreamBatch

log = logging.getLogger(__name__)


class EvaluateStage(StreamingStage):
    """The evaluate service: features in, evaluated quivers out."""

    stage = "evaluate"
    shared = True

    def __init__(self, settings: Settings, parts: StageParts, book: ModelBook) -> None:
        super().__init__(settings, parts)
        self.max_samples = settings.evaluate.max_samples
        self.names = [c.nickname for c in settings.classifiers]
        self.book = book
        self.book.refresh(timeout=2.0)
        self.produced = 0
        self.unevaluated_strides = 0

    @classmethod
    def from_settings(cls, settings: Settings, ns: argparse.Namespace) -> Self:
        """The stage as the settings and command line describe it (Kafka, store, clock).

        The feature kernels load in the background meanwhile (numba, ~1 CPU s), while
        this thread waits on Kafka; a failed start waits for that thread before
        returning, so the process never exits in the middle of it.
        """
        with loading_kernels() as preload:
            parts = streaming_parts(cls.stage, settings, ns, shared=cls.shared)
            with closed_on_error(parts.runtime):
                stage = cls(settings, parts, ModelBook.from_settings(settings, parts.runtime))
        stage._preload = preload
        return stage

    def ready(self) -> bool:
        return any(self.book.model(n) is not None for n in self.names)

    def process(self, batch: StreamBatch) -> None:
        self.book.refresh()
        models = {n: self.book.model(n) for n in self.names}
        if not batch.strides:
            return
        if not any(models.values()):
            self.unevaluated_strides += len(batch.strides)
            log.info(
                "evaluate: no model yet; %d strides [%.0f, %.0f) not evaluated",
                len(batch.strides),
                batch.strides[0][0],
                batch.strides[-1][1],
            )
            return
        usable = {n: clf for n, clf in models.items() if clf is not None}
        todo = []
        for start, end in batch.strides:
            if not self.owns(start):
                continue  # another replica's stride
            valid = batch.segs & segmentlist([segment(start, end)])
            if abs(valid) == 0:
                continue
            data = self.stride_data(batch, start, end)
            # the sample times do not depend on any classifier: drawn once per stride
            samples = self.samples_of(
                data,
                None,
                valid,
                max_samples=self.max_samples,
                rng_seed=self.settings.samples.seed + int(start),
                random_rate=self.settings.evaluate.clean_rate,
            )
            if len(samples) > 0:
                todo.append((start, end, samples))
        if not todo:
            return
        # the ranking code path of the timeseries stage (stride_products), at the
        # sample times instead of on the grid, for every stride of the batch in one call
        # (a rank call has a fixed cost of about a millisecond per layout and classifier,
        # more than a stride's few samples cost): every window lies inside the polled
        # strides' data and rows are ranked independently, so the ranks are the same
        triggers = self.stride_data(batch, todo[0][0], todo[-1][1]).triggers()
        ranked = rank_grid(triggers, np.concatenate([t[2].times for t in todo]), usable)
        at = 0
        for start, end, samples in todo:
            ranks = {n: r[at : at + len(samples)] for n, r in ranked.items()}
            at += len(samples)
            for name, clf in usable.items():
                quiver = Quiver(
                    samples.times,
                    samples.labels,
                    samples.features,
                    samples.columns,
                    start,
                    end,
                    samples.segs,
                    ranks=ranks[name],
                    classifier=clf.nickname,
                    model_id=clf.model.id,
                )
                seq = int(start // self.stream.stride)
                record = quiver_to_record(quiver, self.ifo, seq)
                self.runtime.produce(
                    self.topics.quivers,
                    "quiver",
                    record,
                    key=f"{name}:{start:.0f}",
                    timestamp_ms=self.kafka_ms(start),
                )
                n_glitch = quiver.n_glitch
                self.produced += len(quiver)
                self.runtime.metrics.samples(name, "glitch", n_glitch)
                self.runtime.metrics.samples(name, "clean", len(quiver) - n_glitch)
                log.info(
                    "evaluate: stride [%.0f, %.0f) %s: %d glitch + %d clean samples "
                    "ranked with model %s",
                    start,
                    end,
                    name,
                    n_glitch,
                    len(quiver) - n_glitch,
                    clf.model.id,
                )

    def finish(self) -> None:
        log.info(
            "evaluate: produced %d evaluated samples in this run (%d strides had no model)",
            self.produced,
            self.unevaluated_strides,
        )
