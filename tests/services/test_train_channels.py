"""Train's feature channels are every safe channel seen, not those of the first batch.

Sparse feature messages (sgnax) carry only the channels that fired. A witness that
first fires after train's first batch must join the models at the next retrain, and
a channel matching ``[features] unsafe_channels`` must never be a feature.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from idq_common.data.triggers import TriggerSet
from idq_common.gpstime import gps_now
from idq_common.io.publish import FeaturePublisher
from idq_common.io.store import ArtifactStore
from idq_common.science.channels import ChannelSet, relayout
from idq_common.science.classifiers.base import Model
from idq_common.science.features import FeatureSpec
from idq_common.science.quiver import Quiver
from idq_dev.testing.pipeline import pipeline_config
from idq_dev.testing.synthetic import small_model
from idq_dev.testing.topics import read_topic

LATE = "H1:AUX-WIT_000"  # the strongest witness, silent until LATE_AFTER s in
UNSAFE = "H1:CAL-NOISE_0000"  # a noise channel renamed into the unsafe list


def test_channel_set_collects_every_safe_channel() -> None:
    cs = ChannelSet(exclude=["H1:GDS-CALIB_STRAIN"], unsafe=["*:CAL-*", "re:H1:OMC-DCPD_[AB]"])
    assert cs.update(["H1:GDS-CALIB_STRAIN", "H1:B", "H1:CAL-X", "H1:OMC-DCPD_A"]) == ["H1:B"]
    assert cs.update(["H1:A", "H1:B", "H1:OMC-DCPD_C"]) == ["H1:A", "H1:OMC-DCPD_C"]
    assert cs.channels == ("H1:A", "H1:B", "H1:OMC-DCPD_C")
    assert cs.rejected == {"H1:CAL-X", "H1:OMC-DCPD_A"}
    fixed = ChannelSet(fixed=["H1:Z", "H1:Y"])
    assert fixed.update(["H1:A"]) == [] and fixed.channels == ("H1:Z", "H1:Y")


def test_relayout_gives_new_channels_the_no_trigger_defaults() -> None:
    old = FeatureSpec(("H1:B",), 0.5)
    new = FeatureSpec(("H1:A", "H1:B"), 0.5)
    q = Quiver([1.0, 2.0], [1, 0], np.array([[9.0, 30.0, 0.1], [0.0, 0.0, 0.5]]), old.names, 0, 3)
    r = relayout(q, new)
    assert r.columns == new.names
    assert np.array_equal(r.features[:, :3], [[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]])
    assert np.array_equal(r.features[:, 3:], q.features)
    assert relayout(r, new) is r


def _announcements(settings: Any) -> list[dict[str, Any]]:
    msgs = read_topic(settings.kafka, settings.kafka.topics.models, "trainch.reader")
    return sorted((m.record for m in msgs), key=lambda r: (r["end"], r["created_gps"]))


def _sparse(trig: TriggerSet) -> TriggerSet:
    """Only the channels that fired, as sgnax sends them."""
    fired = np.unique(trig.channel)
    remap = np.zeros(len(trig.channels), dtype=np.int32)
    remap[fired] = np.arange(fired.size, dtype=np.int32)
    names = tuple(trig.channels[i] for i in fired)
    return TriggerSet(names, remap[trig.channel], trig.time, trig.snr, trig.frequency)


@pytest.mark.kafka
def test_late_channel_joins_at_retrain_and_unsafe_never(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    start = float((int(gps_now()) - 3000) // 64 * 64)
    end, late_after = start + 512.0, start + 300.0
    model = small_model(seed=5, glitch_rate=0.5, n_noise=6)
    names = tuple(UNSAFE if c == "H1:AUX-NOISE_0000" else c for c in model.channels)
    late = names.index(LATE)

    def generate(a: float, b: float) -> TriggerSet:
        t = model.generate(a, b)
        t = TriggerSet(names, t.channel, t.time, t.snr, t.frequency)
        keep = (t.channel != late) | (t.time >= late_after)
        return _sparse(t.take(np.nonzero(keep)[0]))

    def edit(doc: dict[str, Any]) -> None:
        doc["train"].update(min_new_samples=150, max_samples=100_000, max_stride=100_000)
        doc["samples"]["random_rate"] = 1.0

    config, settings = pipeline_config(tmp_path, kafka_bootstrap, "trainch", edit=edit)
    producer = Producer(settings.kafka.producer_config())
    pub = FeaturePublisher(producer, settings.kafka.topics.features, "H1", "test")
    pub.publish(generate, start - 16, end + 16)
    pub.flush()
    argv = [sys.executable, "-m", "idq_train.cli", "--config", str(config),
            "--gps-start", str(start), "--gps-end", str(end)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    store = ArtifactStore.from_url(settings.store.url)
    forest = [a for a in _announcements(settings) if a["classifier"] == "forest"]
    specs = [Model.from_bytes(store.get(a["uri"], a["sha256"])).spec for a in forest]
    assert len(specs) >= 2
    assert forest[0]["end"] <= late_after, [(a["start"] - start, a["end"] - start) for a in forest]
    assert LATE not in specs[0].channels
    assert LATE in specs[-1].channels
    assert all(UNSAFE not in s.channels for s in specs)
    # the incremental classifier follows the wider spec as well
    sgd = [a for a in _announcements(settings) if a["classifier"] == "sgd"]
    assert LATE in Model.from_bytes(store.get(sgd[-1]["uri"], sgd[-1]["sha256"])).spec.channels
