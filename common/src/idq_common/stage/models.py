"""Models and calibrations in use by a stage, swapped in live from announcements.

Evaluate needs the newest model of each classifier; timeseries needs, for each
classifier, the newest calibration *and the model it calibrates* (ranks of one
model mean nothing to another model's calibration). Every artifact is loaded from
the store with its sha256 checked; a load that fails keeps what was in use. An
artifact that can never load (a model whose estimator does not match its feature
spec, a malformed or tampered one) is *refused*: its announcement is dead-lettered
once with the reason and never tried again; a store that is only unreachable (an
outage) is tried again at the next stride.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from idq_common.config import ClassifierSettings, Settings
from idq_common.contracts import group_id
from idq_common.exceptions import CalibrationError, ClassifierError, IDQError, IntegrityError
from idq_common.gpstime import unix_to_gps
from idq_common.io.store import ArtifactStore
from idq_common.metrics import StageMetrics
from idq_common.science.calibration import CalibrationMap
from idq_common.science.classifiers.base import Classifier, Model
from idq_common.science.classifiers.factory import make_classifier
from idq_common.stage.announcements import (
    A,
    Announcements,
    AnnouncementTracker,
    CalibrationAnnouncement,
    DeadLetterFn,
    ModelAnnouncement,
)
from idq_common.stage.runtime import ServiceRuntime

log = logging.getLogger(__name__)

#: load failures that retrying cannot cure (an outage of the store is not one)
PERMANENT = (ClassifierError, CalibrationError, IntegrityError)


@dataclass(frozen=True)
class Pair:
    """A model and the calibration fitted on its ranks."""

    classifier: Classifier
    calibration: CalibrationMap
    model_id: str
    calibration_id: str
    healthy: bool
    created_gps: float


class ModelBook:
    """The models (and optionally calibrations) a stage uses, from their announcements.

    Parameters
    ----------
    classifiers : sequence of ClassifierSettings
        The configured classifiers (nickname, flavor, params).
    store : ArtifactStore
        Where the artifacts are.
    metrics : StageMetrics
        For the model and calibration ids and ages in use.
    models : Announcements
        Model announcements (a topic's, or in memory).
    calibrations : Announcements, optional
        Calibration announcements (timeseries).
    deadletter : callable, optional
        ``(reason, topic, partition, offset, payload)``: where refused announcements go.
    """

    def __init__(
        self,
        classifiers: Sequence[ClassifierSettings],
        store: ArtifactStore,
        metrics: StageMetrics,
        models: Announcements[ModelAnnouncement],
        calibrations: Announcements[CalibrationAnnouncement] | None = None,
        deadletter: DeadLetterFn | None = None,
    ) -> None:
        self.flavors = {c.nickname: c.flavor for c in classifiers}
        self.params = {c.nickname: c.params for c in classifiers}
        self.store = store
        self.metrics = metrics
        self.models = models
        self.calibrations = calibrations
        self._classifiers: dict[tuple[str, str], Classifier] = {}
        self._cmaps: dict[str, CalibrationMap] = {}
        self._current: dict[str, Classifier] = {}
        self._pairs: dict[str, Pair] = {}
        #: newest calibration passed over (unhealthy while a healthy one is in use)
        self._skipped: dict[str, str] = {}
        self.deadletter = deadletter
        #: announcements (ids) whose artifacts can never load
        self.refused: set[str] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, runtime: ServiceRuntime, calibrations: bool = False
    ) -> ModelBook:
        """Follow the models (and calibrations) topics the settings name."""
        cfg = settings.kafka.consumer_config(
            group_id(settings.general.ifo, runtime.stage, "announcements")
        )
        topics = settings.kafka.topics
        models = AnnouncementTracker(
            cfg, topics.models, ModelAnnouncement, deadletter=runtime.deadletters.publish
        )
        runtime.on_close(models.close)
        cals: Announcements[CalibrationAnnouncement] | None = None
        if calibrations:
            cals = AnnouncementTracker(
                cfg,
                topics.calibrations,
                CalibrationAnnouncement,
                deadletter=runtime.deadletters.publish,
            )
            runtime.on_close(cals.close)
        store = ArtifactStore.from_url(settings.store.url, **settings.store.storage_options())
        return cls(
            settings.classifiers,
            store,
            runtime.metrics,
            models,
            cals,
            deadletter=runtime.deadletters.publish,
        )

    def refresh(self, timeout: float = 0.0) -> None:
        """Absorb new announcements and load what changed."""
        self.models.refresh(timeout)
        if self.calibrations is not None:
            self.calibrations.refresh(timeout)

    # -- loading ------------------------------------------------------------------------
    def _load_classifier(self, name: str, uri: str, sha256: str, model_id: str) -> Classifier:
        key = (name, model_id)
        if key not in self._classifiers:
            payload = self.store.get(uri, sha256)
            model = Model.from_bytes(payload)
            clf = make_classifier(name, self.flavors[name], self.params[name], model.spec)
            # this stage only ranks: a flavor may skip what ranking does not need
            # (scikit-learn itself, for the forest and SGD)
            clf.load_for_ranking(model)
            self._classifiers[key] = clf
            log.info(
                "%s: loaded model %s (%d samples, span [%.0f, %.0f))",
                name,
                model.id,
                model.n_samples,
                *model.span,
            )
            # keep only a few models per classifier in memory
            old = [k for k in self._classifiers if k[0] == name and k != key]
            for k in old[:-2]:
                del self._classifiers[k]
        return self._classifiers[key]

    def _refuse(
        self,
        log_: Announcements[Any],
        ann: ModelAnnouncement | CalibrationAnnouncement,
        reason: str,
    ) -> None:
        """Never try ``ann`` again; dead-letter it (once) with ``reason``."""
        self.refused.add(ann.ident)
        log.error("%s: refusing %s %s: %s", ann.classifier, ann.kind, ann.ident, reason)
        if self.deadletter is not None:
            topic, part, offset = log_.origins.get(ann.ident, ("", -1, -1))
            self.deadletter(reason, topic, part, offset, ann.encode())

    def _newest(self, log_: Announcements[A], name: str) -> A | None:
        """The newest announcement of ``name`` not refused (the latest, usually)."""
        ann = log_.latest.get(name)
        if ann is None or ann.ident not in self.refused:
            return ann
        usable = [
            a for a in log_.by_id.values() if a.classifier == name and a.ident not in self.refused
        ]
        return max(usable, key=lambda a: (a.created_gps, a.ident), default=None)

    def model(self, name: str) -> Classifier | None:
        """The newest announced model of ``name`` (None before the first)."""
        ann = self._newest(self.models, name)
        if ann is None or name not in self.flavors:
            return self._current.get(name)
        try:
            clf = self._load_classifier(name, ann.uri, ann.sha256, ann.model_id)
        except PERMANENT as exc:
            self._refuse(self.models, ann, f"model {ann.model_id} refused: {exc}")
            return self.model(name)  # the newest one not refused
        except IDQError as exc:
            log.error(
                "%s: cannot load model %s, keeping the one in use: %s", name, ann.model_id, exc
            )
            return self._current.get(name)
        if self._current.get(name) is not clf:
            self.metrics.set_model(name, ann.model_id, ann.created_gps)
        self._current[name] = clf
        return clf

    def pair(self, name: str) -> Pair | None:
        """The newest calibration of ``name`` with the model it calibrates."""
        assert self.calibrations is not None
        ann = self._newest(self.calibrations, name)
        if ann is None or name not in self.flavors:
            return self._pairs.get(name)
        current = self._pairs.get(name)
        if current is not None and ann.calibration_id in (
            current.calibration_id,
            self._skipped.get(name),
        ):
            return current
        pair = self._load_pair(name, ann, current)
        if pair is not None and not pair.healthy and current is not None and current.healthy:
            # keep producing with the last healthy pair rather than switching OK off
            log.warning(
                "%s: keeping calibration %s: the newer %s is unhealthy",
                name,
                current.calibration_id,
                ann.calibration_id,
            )
            self._skipped[name] = ann.calibration_id
            return current
        if pair is not None and pair is not current:
            self._pairs[name] = pair
            self.metrics.set_calibration(name, ann.calibration_id, ann.created_gps)
            log.info(
                "%s: now using calibration %s of model %s%s",
                name,
                ann.calibration_id,
                ann.model_id,
                "" if pair.healthy else " (UNHEALTHY: OK will be 0)",
            )
        return pair

    def pair_for_ids(self, name: str, calibration_id: str | None) -> Pair | None:
        """The pair of an earlier output (redoing a stride reuses what it used).

        Returns None when ``calibration_id`` is None (the stride had no calibration)
        or was never announced.
        """
        tracker = self.calibrations
        assert tracker is not None
        if calibration_id is None:
            return None
        current = self._pairs.get(name)
        if current is not None and current.calibration_id == calibration_id:
            return current
        ann = tracker.by_id.get(calibration_id)
        if ann is None:
            tracker.wait_for(lambda: calibration_id in tracker.by_id, 5.0)
            ann = tracker.by_id.get(calibration_id)
        return None if ann is None else self._load_pair(name, ann, None)

    def _load_pair(
        self, name: str, ann: CalibrationAnnouncement, current: Pair | None
    ) -> Pair | None:
        try:
            model_ann = self.models.by_id.get(ann.model_id)
            uri = model_ann.uri if model_ann else ann.model_uri
            sha = model_ann.sha256 if model_ann else ann.model_sha256
            if not uri:
                log.warning(
                    "%s: calibration %s names model %s, not announced yet",
                    name,
                    ann.calibration_id,
                    ann.model_id,
                )
                return current
            clf = self._load_classifier(name, uri, sha, ann.model_id)
            cmap = CalibrationMap.from_bytes(self.store.get(ann.uri, ann.sha256))
        except PERMANENT as exc:
            assert self.calibrations is not None
            self._refuse(
                self.calibrations,
                ann,
                f"calibration {ann.calibration_id} (model {ann.model_id}) refused: {exc}",
            )
            return current if current is not None else self.pair(name)
        except IDQError as exc:
            log.error(
                "%s: cannot load calibration %s, keeping the one in use: %s",
                name,
                ann.calibration_id,
                exc,
            )
            return current
        healthy, reason = cmap.health()
        if not healthy:
            log.warning("%s: calibration %s is unhealthy: %s", name, ann.calibration_id, reason)
        healthy = healthy and ann.healthy
        model_created = model_ann.created_gps if model_ann else unix_to_gps(clf.model.created)
        self.metrics.set_model(name, ann.model_id, model_created)
        return Pair(clf, cmap, ann.model_id, ann.calibration_id, healthy, ann.created_gps)
