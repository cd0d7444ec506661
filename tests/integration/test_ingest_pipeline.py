"""SNAX and sgnax JSON through ``idq-ingest`` into the four services, ending in frames.

Two feature-extractor jobs share the JSON topic as a site would run them: one sends
SNAX messages ("timestamp", 16 null-padded bins) for half of the auxiliary channels,
the other sgnax messages ("time", sparse rows, ``_<flow>_<fhigh>`` keys) for the other
half and the target channel. ``idq-ingest`` (its own process, real Kafka) publishes
them as feature batches; train, evaluate, calibrate and timeseries replay the span;
the frames must cover it, with valid output once a model and calibration exist, and
nothing may have gone to the dead-letter topic.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import gps_now, gps_to_kafka_ms
from idq_common.io.frames import find_frames, read_frame
from idq_dev.pipeline.local import MARGIN, LocalPipeline
from idq_dev.testing.pipeline import create_source_topic, pipeline_config
from idq_dev.testing.snax_json import message
from idq_dev.testing.topics import read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DURATION = 320.0


def _edit(doc: dict[str, Any]) -> None:
    doc["samples"]["random_rate"] = 4.0
    doc["train"]["min_new_samples"] = 150
    doc["calibrate"]["min_new_samples"] = 100
    doc["classifier"] = [c for c in doc["classifier"] if c["nickname"] == "forest"]


def test_snax_and_sgnax_json_through_ingest_to_frames(kafka_bootstrap: str, tmp_path: Path) -> None:
    start = float((int(gps_now()) - 2 * 86400) // 64 * 64)  # history: two days old
    end = start + DURATION
    config, settings = pipeline_config(tmp_path, kafka_bootstrap, "ingestpipe", edit=_edit)
    source = create_source_topic(settings, partitions=2)
    model = SyntheticModel(
        seed=9, ifo="H1", target_channel=settings.samples.target_channel, n_witness=6,
        n_noise=10, glitch_rate=1.0,
    )  # fmt: skip
    n = len(model.channels)  # channel 0 is the target
    jobs = {"snax": range(1, 1 + n // 2), "sgnax": [0, *range(1 + n // 2, n)]}
    producer = Producer(settings.kafka.producer_config())
    for gps in range(int(start - MARGIN), int(end + MARGIN)):
        for style, channels in jobs.items():
            producer.produce(
                source,
                message(model, gps, style, channels=channels),
                key=style.encode(),
                timestamp=gps_to_kafka_ms(gps),
            )
        producer.poll(0)
    producer.flush(30)

    pipeline = LocalPipeline(config, tmp_path, start, end)
    # from the start of the JSON topic to the end of what was sent
    ingest = LocalPipeline(config, tmp_path, None, end + MARGIN).service(
        "ingest", program=[sys.executable, "-m", "idq_ingest.cli"]
    )
    try:
        ingest.start()
        pipeline.processes["ingest"] = ingest
        pipeline.wait(["ingest"], timeout=300)
        # stage after stage: with all the data already there, a replayed evaluate would
        # otherwise race through the span before train's first model exists
        for group in (["train"], ["evaluate", "calibrate"], ["timeseries"]):
            pipeline.start(group, with_producer=False)
            pipeline.wait(group, timeout=300)
    finally:
        pipeline.stop()
        ingest.terminate()

    batches = [
        (m.key, m.record) for m in read_topic(settings.kafka, settings.kafka.topics.features)
    ]
    sources = {record["source"] for _, record in batches}
    assert sources == {"ingest.snax", "ingest.sgnax"}
    assert len(batches) == 2 * int(DURATION + 2 * MARGIN)
    channels = set().union(*(record["channels"] for _, record in batches))
    assert settings.samples.target_channel in channels  # sgnax's band suffix stripped
    assert any(c.endswith("_10_2048") for c in channels)  # the other sgnax keys keep it
    assert any(c.startswith("H1:AUX-WIT") and not c.endswith("_2048") for c in channels)
    assert not read_topic(settings.kafka, settings.kafka.topics.deadletter)

    frames = find_frames(tmp_path / "frames", "H", settings.timeseries.description)
    assert len(frames) == int(DURATION)
    ok = sum(int(np.sum(v)) for p in frames for k, v in read_frame(p).items() if "-OK_" in k)
    assert ok > 0, "frames must hold valid output once a model and calibration exist"
