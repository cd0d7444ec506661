"""Train's models depend on the data, not on how polls group strides (issue 12).

Found by the chaos run: a round of models ended at the end of a *poll*, and a poll
holds as many due strides as the data clock allows at that moment (up to 64 s): the
clean run and a run restarted mid-way grouped strides differently, so they trained
on different spans and announced different models. Rounds now end at the stride
where enough new samples are in.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from idq_common.config import Settings, settings_from_dict
from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import ManualClock
from idq_common.io.store import ArtifactStore
from idq_common.stage import loop
from idq_common.stage.announcements import Announcements, ModelAnnouncement
from idq_common.stage.loop import StageParts
from idq_common.streaming.processor import FunctionSource
from idq_dev.testing.fakes import MemoryProducer, MemoryProgress, memory_runtime
from idq_train.stage import TrainStage

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_300_000_000.0
SPAN = (T0, T0 + 192.0)


def _settings(tmp: Path) -> Settings:
    with (ROOT / "etc" / "idq-demo.toml").open("rb") as fh:
        doc: dict[str, Any] = tomllib.load(fh)
    doc["samples"]["random_rate"] = 4.0
    doc["train"]["min_new_samples"] = 150
    doc["store"]["url"] = (tmp / "store").as_uri()
    doc["classifier"] = [c for c in doc["classifier"] if c["nickname"] in ("ovl", "forest")]
    return settings_from_dict(doc, env={})


def _models(tmp: Path, poll_seconds: float, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    monkeypatch.setattr(loop, "MAX_POLL_SECONDS", poll_seconds)
    settings = _settings(tmp)
    clock = ManualClock(SPAN[1] + 60.0)
    runtime = memory_runtime("train", "H1", clock, settings.kafka.topics.deadletter)
    parts = StageParts(
        runtime=runtime,
        checkpoint=MemoryProgress(),
        source=FunctionSource(SyntheticModel(seed=3, n_witness=4, n_noise=8).generate),
        clock=clock,
        start=SPAN[0],
        end=SPAN[1],
        replay=True,
    )
    stage = TrainStage(settings, parts, ArtifactStore.from_url(settings.store.url), Announcements())
    try:
        assert stage.run() == 0
    finally:
        stage.close()
    assert isinstance(runtime.producer, MemoryProducer)
    out = []
    for _, record in runtime.producer.records(settings.kafka.topics.models):
        ann = ModelAnnouncement.from_record(record)
        out.append((ann.classifier, ann.model_id, ann.start, ann.end, ann.n_samples))
    return out


def test_models_do_not_depend_on_poll_grouping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_64 = _models(tmp_path / "a", 64.0, monkeypatch)
    by_16 = _models(tmp_path / "b", 16.0, monkeypatch)
    assert by_64 and by_64 == by_16
