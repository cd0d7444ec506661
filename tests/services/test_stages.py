"""Each stage driven in-process: a ManualClock, an in-memory feature source, in-memory
producer, progress and quiver consumer (idq_dev.testing.fakes), a real file store.

The chain is the pipeline's: train's announcements feed evaluate, evaluate's quivers
feed calibrate, both announcements feed timeseries. Assertions are on what a stage
produced (decoded records), what it committed, and its metrics; never on log text.
The same stages against a real broker are tests/integration/test_pipeline_e2e.py.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idq_calibrate.stage import CalibrateStage
from idq_common.config import Settings, settings_from_dict
from idq_common.contracts import PRODUCTS, channel_name
from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import ManualClock
from idq_common.io.avro.convert import record_to_timeseries
from idq_common.io.frames import find_frames, read_frame, read_provenance
from idq_common.io.store import ArtifactStore
from idq_common.science.calibration import CalibrationMap
from idq_common.science.classifiers.base import Model
from idq_common.science.features import FeatureSpec
from idq_common.stage.announcements import (
    Announcements,
    CalibrationAnnouncement,
    ModelAnnouncement,
)
from idq_common.stage.loop import StageParts
from idq_common.stage.models import ModelBook
from idq_common.stage.runtime import ServiceRuntime
from idq_common.streaming.processor import FunctionSource
from idq_dev.testing.fakes import MemoryConsumer, MemoryProducer, MemoryProgress, memory_runtime
from idq_evaluate.stage import EvaluateStage
from idq_timeseries.stage import TimeseriesStage
from idq_train.stage import TrainStage

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_300_000_000.0
TRAIN_SPAN = (T0, T0 + 128.0)
EVAL_SPAN = (T0 + 128.0, T0 + 320.0)
TS_SPAN = (T0 + 320.0, T0 + 328.0)


def _settings(tmp: Path) -> Settings:
    with (ROOT / "etc" / "idq-demo.toml").open("rb") as fh:
        doc: dict[str, Any] = tomllib.load(fh)
    doc["samples"]["random_rate"] = 8.0
    doc["evaluate"]["clean_rate"] = 16.0  # evaluate draws its own rate of clean samples
    doc["train"]["min_new_samples"] = 200
    doc["calibrate"]["min_new_samples"] = 100
    doc["store"]["url"] = (tmp / "store").as_uri()
    doc["timeseries"]["output_dir"] = str(tmp / "frames")
    doc["classifier"] = [c for c in doc["classifier"] if c["nickname"] in ("ovl", "forest")]
    return settings_from_dict(doc, env={})


@dataclass
class Chain:
    settings: Settings
    model: SyntheticModel
    store: ArtifactStore
    models: Announcements[ModelAnnouncement]
    calibrations: Announcements[CalibrationAnnouncement]
    results: dict[str, Any]


def _parts(
    chain: Chain, stage: str, span: tuple[float, float], progress: MemoryProgress
) -> StageParts:
    clock = ManualClock(span[1] + 60.0)  # every stride of the span is due
    runtime = memory_runtime(stage, "H1", clock, chain.settings.kafka.topics.deadletter)
    return StageParts(
        runtime=runtime,
        checkpoint=progress,
        source=FunctionSource(chain.model.generate),
        clock=clock,
        start=span[0],
        end=span[1],
        replay=True,
    )


def _producer(runtime: ServiceRuntime) -> MemoryProducer:
    assert isinstance(runtime.producer, MemoryProducer)
    return runtime.producer


def _metric(runtime: ServiceRuntime, name: str, **labels: str) -> float:
    value = runtime.metrics.registry.get_sample_value(
        name, {"stage": runtime.stage, "ifo": "H1", **labels}
    )
    return 0.0 if value is None else value


def _run_with_book(
    chain: Chain,
    cls: type[EvaluateStage] | type[TimeseriesStage],
    span: tuple[float, float],
    calibrations: bool,
) -> None:
    """Run a stage that follows the announcements so far over ``span``; keep its results."""
    progress = MemoryProgress()
    parts = _parts(chain, cls.stage, span, progress)
    book = ModelBook(
        chain.settings.classifiers,
        chain.store,
        parts.runtime.metrics,
        chain.models,
        chain.calibrations if calibrations else None,
    )
    stage = cls(chain.settings, parts, book)
    try:
        assert stage.run() == 0
    finally:
        stage.close()
    chain.results[cls.stage] = (parts.runtime, progress, _producer(parts.runtime))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    tmp = tmp_path_factory.mktemp("stages")
    settings = _settings(tmp)
    model = SyntheticModel(seed=3, n_witness=4, n_noise=8, glitch_rate=1.0)
    store = ArtifactStore.from_url(settings.store.url)
    return Chain(settings, model, store, Announcements(), Announcements(), {})


@pytest.fixture(scope="module")
def trained(chain: Chain) -> Chain:
    progress = MemoryProgress()
    parts = _parts(chain, "train", TRAIN_SPAN, progress)
    stage = TrainStage(chain.settings, parts, chain.store, Announcements())
    try:
        assert stage.run() == 0
    finally:
        stage.close()
    out = _producer(parts.runtime).records(chain.settings.kafka.topics.models)
    for _key, record in out:
        chain.models.add(ModelAnnouncement.from_record(record))
    chain.results["train"] = (parts.runtime, progress, out)
    return chain


def test_train_announces_models_and_commits_after_them(trained: Chain) -> None:
    runtime, progress, out = trained.results["train"]
    names = {c.nickname for c in trained.settings.classifiers}
    assert {key for key, _ in out} == names
    for key, record in out:
        ann = ModelAnnouncement.from_record(record)
        assert ann.classifier == key and ann.ifo == "H1"
        assert TRAIN_SPAN[0] <= ann.start < ann.end <= TRAIN_SPAN[1]
        # the announced artifact is in the store with the announced checksum
        assert trained.store.get(ann.uri, ann.sha256)
        assert _metric(runtime, "idq_models_published_total", classifier=key) >= 1
    # progress is committed only with models out, and names the stored training set
    assert progress.saves, "train committed nothing"
    next_gps, extra = progress.saves[-1]
    assert TRAIN_SPAN[0] < next_gps <= TRAIN_SPAN[1] and "state" in extra
    assert (
        _metric(runtime, "idq_strides_processed_total")
        == (TRAIN_SPAN[1] - TRAIN_SPAN[0]) / trained.settings.train.stream.stride
    )


@pytest.fixture(scope="module")
def evaluated(trained: Chain) -> Chain:
    chain = trained
    _run_with_book(chain, EvaluateStage, EVAL_SPAN, calibrations=False)
    return chain


def test_evaluate_publishes_one_ranked_quiver_per_classifier_and_stride(evaluated: Chain) -> None:
    runtime, progress, producer = evaluated.results["evaluate"]
    stride = evaluated.settings.evaluate.stream.stride
    out = producer.records(evaluated.settings.kafka.topics.quivers)
    assert out
    keys = [key for key, _ in out]
    assert len(keys) == len(set(keys)), "one quiver per classifier and stride"
    latest = {n: a.model_id for n, a in evaluated.models.latest.items()}
    for key, record in out:
        name, start = key.split(":")
        assert record["classifier"] == name and record["model_id"] == latest[name]
        assert EVAL_SPAN[0] <= float(start) < EVAL_SPAN[1] and float(start) % stride == 0
        n = len(np.frombuffer(record["labels"], dtype="i1"))
        assert len(np.frombuffer(record["ranks"], dtype="<f8")) == n > 0
    for name in latest:
        counted = sum(
            _metric(runtime, "idq_samples_total", classifier=name, label=label)
            for label in ("glitch", "clean")
        )
        produced = sum(
            len(np.frombuffer(r["labels"], dtype="i1")) for k, r in out if k.startswith(name)
        )
        assert counted == produced
        # clean samples at [evaluate] clean_rate (16/s), not [samples] random_rate (8/s):
        # glitches at 1/s with 1 s of dirty time each leave ~e^-1 of the time clean, so
        # ~5.9/s here (999 seen), ~2.9/s at the random_rate
        clean = _metric(runtime, "idq_samples_total", classifier=name, label="clean")
        assert clean > 4.0 * (EVAL_SPAN[1] - EVAL_SPAN[0])
    # committed after every batch, up to the end of the span
    assert progress.saves[-1][0] == EVAL_SPAN[1]
    assert _metric(runtime, "idq_last_stride_end_gps") == EVAL_SPAN[1]


@pytest.fixture(scope="module")
def calibrated(evaluated: Chain) -> Chain:
    chain = evaluated
    clock = ManualClock(EVAL_SPAN[1] + 60.0)
    runtime = memory_runtime("calibrate", "H1", clock, chain.settings.kafka.topics.deadletter)
    consumer = MemoryConsumer(chain.settings.kafka.topics.quivers)
    _, _, producer = chain.results["evaluate"]
    for m in producer.messages:
        if m.topic() == consumer.topic:
            consumer.add(m.value() or b"", (m.key() or b"").decode())
    consumer.add(b"not avro", "junk")  # goes to the dead-letter topic, not into a batch
    upstream = MemoryProgress(resumed=EVAL_SPAN[1])  # evaluate is done with the span
    stage = CalibrateStage(
        chain.settings, runtime, consumer, chain.models, upstream, chain.store, EVAL_SPAN[1]
    )
    try:
        assert stage.run() == 0
    finally:
        stage.close()
    out = _producer(runtime).records(chain.settings.kafka.topics.calibrations)
    for _key, record in out:
        chain.calibrations.add(CalibrationAnnouncement.from_record(record))
    chain.results["calibrate"] = (runtime, consumer, out)
    chain.results["calibrate_stage"] = stage
    return chain


def test_calibrate_announces_maps_for_the_models_and_settles_offsets(calibrated: Chain) -> None:
    runtime, consumer, out = calibrated.results["calibrate"]
    assert out
    for key, record in out:
        ann = CalibrationAnnouncement.from_record(record)
        model = calibrated.models.by_id[ann.model_id]
        assert ann.classifier == key == model.classifier
        assert (ann.model_uri, ann.model_sha256) == (model.uri, model.sha256)
        assert ann.n_glitch + ann.n_clean >= calibrated.settings.calibrate.min_new_samples
        assert calibrated.store.get(ann.uri, ann.sha256)
        # the floor is the map's own FAP at rank 1, never below the conformal 1/(n+1)
        cmap = CalibrationMap.from_json(calibrated.store.get(ann.uri, ann.sha256).decode())
        assert ann.fap_floor == float(cmap.fap(np.ones(1))[0]) >= 1 / (ann.n_clean + 1)
        assert _metric(runtime, "idq_calibrations_published_total", classifier=key) >= 1
    dead = _producer(runtime).records(calibrated.settings.kafka.topics.deadletter)
    assert len(dead) == 1 and dead[0][1]["offset"] == len(consumer.messages) - 1
    assert _metric(runtime, "idq_deadletter_messages_total", reason="BadMarkerError") == 1
    # every quiver released in stride order; the commit is at the earliest quiver a
    # sliding window still holds (a restart re-reads the windows from there)
    stage = calibrated.results["calibrate_stage"]
    assert stage.released_to == EVAL_SPAN[1] and not any(stage.buffer.values())
    held = [off for b in stage.batches.values() for _, off in b.held()]
    assert held and consumer.commits[-1] == min(held)


@pytest.fixture(scope="module")
def timeseries(calibrated: Chain) -> Chain:
    chain = calibrated
    _run_with_book(chain, TimeseriesStage, TS_SPAN, calibrations=True)
    return chain


def test_timeseries_writes_a_frame_and_records_per_stride(timeseries: Chain) -> None:
    runtime, progress, producer = timeseries.results["timeseries"]
    s = timeseries.settings
    ts = s.timeseries
    names = [c.nickname for c in s.classifiers]
    frames = find_frames(ts.output_dir, s.general.observatory, ts.description, *TS_SPAN)
    n_strides = int((TS_SPAN[1] - TS_SPAN[0]) / ts.stream.stride)
    assert len(frames) == n_strides
    assert _metric(runtime, "idq_frames_written_total") == n_strides
    out = producer.records(s.kafka.topics.timeseries)
    assert len(out) == n_strides * len(names)
    by_key = {key: record for key, record in out}
    for path in frames:
        data = read_frame(path)
        prov = read_provenance(path)
        start = float(path.name.split("-")[-2])
        for name in names:
            pair = prov[name]
            assert pair["calibration_id"] == timeseries.calibrations.latest[name].calibration_id
            columns = record_to_timeseries(by_key[f"{name}:{start:.0f}"])
            assert by_key[f"{name}:{start:.0f}"]["frame_uri"] == path.resolve().as_uri()
            for product in PRODUCTS:
                frame_series = data[channel_name("H1", product, name, ts.fmin, ts.fmax)]
                np.testing.assert_array_equal(frame_series, columns[product.lower()])
            assert np.asarray(data[channel_name("H1", "OK", name, ts.fmin, ts.fmax)]).all()
    for name in names:
        assert _metric(runtime, "idq_ok_fraction", classifier=name) == 1.0
        cal = timeseries.calibrations.latest[name]
        assert _metric(runtime, "idq_calibration_info", classifier=name, id=cal.ident) == 1
        assert _metric(runtime, "idq_calibration_age_seconds", classifier=name) > 0
    assert progress.saves[-1][0] == TS_SPAN[1]


def test_timeseries_refuses_a_model_of_the_wrong_feature_count(timeseries: Chain) -> None:
    """A model whose estimator was fitted on fewer features than its spec names (a
    wrong-shape artifact) is refused: its announcements are dead-lettered with the
    reason and the previous model and calibration stay in use (no crash loop)."""
    chain = timeseries
    name = "forest"
    good_model = chain.models.latest[name]
    good_cal = chain.calibrations.latest[name]
    model = Model.from_bytes(chain.store.get(good_model.uri, good_model.sha256))
    wider = FeatureSpec(
        (*model.spec.channels, "H1:EXTRA-CHANNEL"), model.spec.window, model.spec.columns
    )
    bad = Model(model.flavor, model.payload, wider, n_samples=model.n_samples, span=model.span)
    ref = chain.store.put("model", bad.to_bytes(), {"classifier": name})
    bad_model = dataclasses.replace(
        good_model, model_id=bad.id, uri=ref.uri, sha256=ref.sha256,
        created_gps=good_model.created_gps + 1,
    )  # fmt: skip
    # another (earlier) map of the classifier: artifacts are content-addressed
    other = next(
        c for c in chain.calibrations.by_id.values()
        if c.classifier == name and c.calibration_id != good_cal.calibration_id
    )  # fmt: skip
    bad_cal = dataclasses.replace(
        other, model_id=bad.id, model_uri=ref.uri, model_sha256=ref.sha256,
        created_gps=good_cal.created_gps + 1,
    )  # fmt: skip
    models: Announcements[ModelAnnouncement] = Announcements()
    cals: Announcements[CalibrationAnnouncement] = Announcements()
    for ann in chain.models.by_id.values():
        models.add(ann)
    for cann in chain.calibrations.by_id.values():
        cals.add(cann)
    models.add(bad_model, origin=(chain.settings.kafka.topics.models, 0, 99))
    cals.add(bad_cal, origin=(chain.settings.kafka.topics.calibrations, 0, 42))
    span = (TS_SPAN[1], TS_SPAN[1] + 4.0)
    progress = MemoryProgress()
    parts = _parts(chain, "timeseries", span, progress)
    book = ModelBook(
        chain.settings.classifiers, chain.store, parts.runtime.metrics, models, cals,
        deadletter=parts.runtime.deadletters.publish,
    )  # fmt: skip
    stage = TimeseriesStage(chain.settings, parts, book)
    try:
        assert stage.run() == 0
    finally:
        stage.close()
    ts = chain.settings.timeseries
    frames = find_frames(ts.output_dir, chain.settings.general.observatory, ts.description, *span)
    assert len(frames) == int((span[1] - span[0]) / ts.stream.stride)
    for path in frames:  # the previous pair, OK as before
        assert read_provenance(path)[name]["calibration_id"] == good_cal.calibration_id
        assert read_frame(path)[channel_name("H1", "OK", name, ts.fmin, ts.fmax)].all()
    dead = _producer(parts.runtime).records(chain.settings.kafka.topics.deadletter)
    # the calibration naming the wrong-shape model, once (not once per stride)
    assert [(d["topic"], d["offset"]) for _, d in dead] == [
        (chain.settings.kafka.topics.calibrations, 42)
    ], dead
    reason = dead[0][1]["reason"]  # the estimator's (or its lags') shape against the spec
    assert "refused" in reason and bad.id in reason and "13 channels" in reason, reason
