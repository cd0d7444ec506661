"""The train stage loop.

From every new umbrella with livetime: a quiver of glitch and clean samples. They
accumulate until ``min_new_samples`` new samples are in; then every classifier is
trained (a supervised one on the whole accumulated set, pruned to the newest
``max_samples`` samples within ``max_stride`` seconds; an incremental one on the
samples it has not learned yet), its model stored and announced on the compacted
models topic.

Progress is committed only when the models that used the new samples are out, with
the training set (history.py) stored beside them and named in the commit, so a crash
re-reads the strides since the last model on top of the history those models saw: no
sample is lost to training, and the next model after a restart sees as many as ever.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Self

from igwn_segments import segment, segmentlist

from idq_common.config import Settings
from idq_common.contracts import group_id
from idq_common.exceptions import ArtifactNotFoundError, IntegrityError
from idq_common.gpstime import gps_now
from idq_common.io.store import ArtifactStore
from idq_common.science.channels import ChannelSet, relayout
from idq_common.science.classifiers.base import Classifier, Model
from idq_common.science.classifiers.factory import is_incremental, make_classifier
from idq_common.science.features import FeatureSpec
from idq_common.science.quiver import Quiver
from idq_common.stage.announcements import (
    Announcements,
    AnnouncementTracker,
    ModelAnnouncement,
)
from idq_common.stage.factory import closed_on_error, store_for, streaming_parts
from idq_common.stage.loop import StageParts, StreamingStage, loading_kernels
from idq_common.streaming.processor import StreamBatch
from idq_train.history import TrainingSet

log = logging.getLogger(__name__)


class TrainStage(StreamingStage):
    """The train service: features in, model announcements out."""

    stage = "train"
    commit_every_batch = False

    def __init__(
        self,
        settings: Settings,
        parts: StageParts,
        store: ArtifactStore,
        announced: Announcements[ModelAnnouncement],
    ) -> None:
        super().__init__(settings, parts)
        cfg = settings.train
        self.min_new = cfg.min_new_samples
        self.max_samples = cfg.max_samples
        self.max_stride = cfg.max_stride
        self.samples = settings.samples
        self.store = store
        self.spec: FeatureSpec | None = None
        f = settings.features
        self.channel_set = ChannelSet(
            exclude=[settings.samples.target_channel], unsafe=f.unsafe_channels, fixed=f.channels
        )
        self.classifiers: dict[str, Classifier] = {}
        self.history = TrainingSet(
            [c.nickname for c in settings.classifiers if is_incremental(c.flavor)],
            self.max_samples,
            self.max_stride,
        )
        self.models_published = 0
        self._resume_models(announced)
        self._resume_history()

    @classmethod
    def from_settings(cls, settings: Settings, ns: argparse.Namespace) -> Self:
        """The stage as the settings and command line describe it (Kafka, store, clock).

        The feature kernels load in the background meanwhile (numba, ~1 CPU s), while
        this thread waits on Kafka (as evaluate's); a failed start waits for that
        thread before returning, so the process never exits in the middle of it.
        """
        with loading_kernels() as preload:
            parts = streaming_parts(cls.stage, settings, ns, shared=cls.shared)
            with closed_on_error(parts.runtime):
                runtime = parts.runtime
                announced = AnnouncementTracker(
                    settings.kafka.consumer_config(group_id(runtime.ifo, cls.stage, "resume")),
                    settings.kafka.topics.models,
                    ModelAnnouncement,
                    deadletter=runtime.deadletters.publish,
                )
                try:
                    stage = cls(settings, parts, store_for(settings), announced)
                finally:
                    announced.close()  # read once, at start
        stage._preload = preload
        return stage

    # -- start-up -------------------------------------------------------------------
    def _resume_models(self, announced: Announcements[ModelAnnouncement]) -> None:
        """Continue from the models already announced (incremental ones keep learning)."""
        announced.refresh(timeout=2.0)
        for c in self.settings.classifiers:
            ann = announced.latest.get(c.nickname)
            if ann is None:
                continue
            model = Model.from_bytes(self.store.get(ann.uri, ann.sha256))
            clf = make_classifier(c.nickname, c.flavor, c.params, model.spec)
            clf.model = model
            self.classifiers[c.nickname] = clf
            self.channel_set.update(model.spec.channels)
            self.runtime.metrics.set_model(c.nickname, model.id, ann.created_gps)
            log.info("train: resuming %s from model %s", c.nickname, model.id)

    def _resume_history(self) -> None:
        """The training set committed with the checkpoint we resume from, if any."""
        meta = self.checkpoint.load_metadata()
        if meta is None or "state" not in meta or meta["next_gps"] != self.cadence.timestamp:
            return  # a first start, or --from-start: history starts empty
        try:
            self.history.restore(self.store.get(meta["state"], meta.get("sha256")))
        except (ArtifactNotFoundError, IntegrityError, ValueError, KeyError) as exc:
            # a lost or damaged state cannot be fixed by waiting: start afresh, loudly
            log.error("train: training set %s unusable (%s); starting empty", meta["state"], exc)
            return
        self.history.before(self.cadence.timestamp)
        log.info(
            "train: resumed a training set of %d samples from %s", len(self.history), meta["state"]
        )

    def commit(self, next_gps: float | None = None) -> None:
        """Store the training set, then commit progress naming it (one atomic commit).

        ``next_gps``: where a restart resumes (default the cadence timestamp); the
        training set stored is the one of that point.
        """
        gps = self.cadence.timestamp if next_gps is None else next_gps
        ref = self.store.put(
            "train_state", self.history.to_bytes(), {"ifo": self.ifo, "next_gps": gps}
        )
        self.checkpoint.save(gps, pad=self.pad, extra={"state": ref.uri, "sha256": ref.sha256})

    def _feature_spec(self, batch: StreamBatch) -> FeatureSpec:
        """Features over every safe channel seen so far (science/channels.py).

        A channel seen for the first time widens the spec: kept samples get its
        "no trigger" columns (it had none then) and the next models include it.
        """
        new = self.channel_set.update(batch.umbrella.channels)
        if self.spec is None or new:
            f = self.settings.features
            channels = self.channel_set.channels
            spec = self.spec = FeatureSpec(channels, f.window, tuple(f.columns))
            self.history.relayout(lambda q: relayout(q, spec))
            log.info(
                "train: %d feature channels (%d new), window %g s, columns %s; "
                "%d unsafe channels left out",
                len(channels),
                len(new),
                f.window,
                ",".join(f.columns),
                len(self.channel_set.rejected),
            )
        return self.spec

    def ready(self) -> bool:
        return True

    # -- the work -------------------------------------------------------------------
    def process(self, batch: StreamBatch) -> None:
        if not batch.strides:
            return
        if batch.livetime == 0:
            log.info(
                "train: strides [%.0f, %.0f) have no livetime",
                batch.strides[0][0],
                batch.strides[-1][1],
            )
            return
        spec = self._feature_spec(batch)
        # stride by stride: a round of models ends at the stride where enough new samples
        # are in, wherever the poll's batch ends (polls group strides as the data arrive,
        # so rounds by batch made the models depend on timing, not on the data)
        for start, end in batch.strides:
            segs = batch.segs & segmentlist([segment(start, end)])
            if abs(segs) == 0:
                continue
            quiver = self.samples_of(self.stride_data(batch, start, end), spec, segs)
            quiver.start, quiver.end = start, end
            self.history.add(quiver)
            if self.history.n_new >= self.min_new:
                log.info(
                    "train: %d new samples by GPS %.0f (%d accumulated): training",
                    self.history.n_new,
                    end,
                    len(self.history),
                )
                self._train_all()
                self.runtime.flush()
                self.commit(end)
        for c in self.settings.classifiers:
            self.runtime.metrics.accumulated(c.nickname, self.history.n_new)
        log.info(
            "train: strides [%.0f, %.0f): %d new of %d needed, %d accumulated",
            batch.strides[0][0],
            batch.strides[-1][1],
            self.history.n_new,
            self.min_new,
            len(self.history),
        )

    def _train_all(self) -> None:
        assert self.spec is not None
        for c in self.settings.classifiers:
            clf = self.classifiers.get(c.nickname)
            widened = clf is not None and clf.feature_spec != self.spec
            if clf is None or widened:
                # new channels: an incremental model cannot change its width, so it
                # starts again on the whole kept history
                clf = self.classifiers[c.nickname] = make_classifier(
                    c.nickname, c.flavor, c.params, self.spec
                )
            incremental = getattr(clf, "incremental", False) and not widened
            data = self.history.data_for(c.nickname, incremental)
            if data.n_glitch == 0 or data.n_clean == 0:
                log.warning(
                    "train: %s: %d glitch / %d clean samples, not training",
                    c.nickname,
                    data.n_glitch,
                    data.n_clean,
                )
                continue
            t0 = time.monotonic()
            model = clf.train(data)
            self._publish(c.nickname, c.flavor, model, data, time.monotonic() - t0)
            self.history.trained(c.nickname)
        self.history.round_done()

    def _publish(self, name: str, flavor: str, model: Model, data: Quiver, seconds: float) -> None:
        ref = self.store.put(
            "model",
            model.to_bytes(),
            {
                "classifier": name,
                "flavor": flavor,
                "model_id": model.id,
                "n_samples": model.n_samples,
                "start": model.span[0],
                "end": model.span[1],
            },
        )
        created = gps_now()
        ann = ModelAnnouncement(
            ifo=self.ifo,
            classifier=name,
            flavor=flavor,
            model_id=model.id,
            uri=ref.uri,
            sha256=ref.sha256,
            created_gps=created,
            start=float(model.span[0]),
            end=float(model.span[1]),
            n_samples=int(model.n_samples),
            metrics={
                "train_seconds": seconds,
                "n_glitch": float(data.n_glitch),
                "n_clean": float(data.n_clean),
            },
        )
        self.runtime.produce(
            self.topics.models,
            ann.kind,
            ann.to_record(),
            key=name,
            timestamp_ms=self.kafka_ms(float(model.span[1])),
        )
        self.models_published += 1
        self.runtime.metrics.set_model(name, model.id, created)
        self.runtime.metrics.model_published(name)
        log.info(
            "train: %s model %s from %d glitch + %d clean samples [%.0f, %.0f) in %.2f s",
            name,
            model.id,
            data.n_glitch,
            data.n_clean,
            data.start,
            data.end,
            seconds,
        )

    def finish(self) -> None:
        log.info("train: published %d models in this run", self.models_published)
