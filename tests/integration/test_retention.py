"""Replaying history loses nothing: a year-old span survives the broker's retention.

Message timestamps are the data's GPS time (readers seek by GPS). A topic deleted by
time therefore drops a year-old span as soon as the broker checks; the pipeline's
topics are deleted by size instead (docs/ARCHITECTURE.md, "Retention"). The test
publishes a year-old span to the features topic and, as a control, to a topic with the
old time-based policy; it waits until the broker's retention check has emptied the
control (the session broker checks every second), then runs the four services over
the span and replays timeseries twice with ``--from-start``: identical frames.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from idq_common.data.synthetic import SyntheticModel
from idq_common.gpstime import gps_now
from idq_common.io.frames import find_frames, read_frame
from idq_common.io.kafka.topics import TopicSpec, create_topics
from idq_common.io.publish import FeaturePublisher, partitioning
from idq_dev.pipeline.local import MARGIN, LocalPipeline
from idq_dev.testing.kafka_broker import BOOTSTRAP_ENV
from idq_dev.testing.pipeline import pipeline_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

YEAR = 365 * 86400
DURATION = 384.0


def _edit(doc: dict[str, Any]) -> None:
    doc["samples"]["random_rate"] = 2.0
    doc["train"]["min_new_samples"] = 300
    doc["calibrate"]["min_new_samples"] = 150
    doc["classifier"] = [c for c in doc["classifier"] if c["nickname"] == "forest"]


def _watermarks(settings: Any, topic: str) -> list[tuple[int, int]]:
    consumer = Consumer(settings.kafka.consumer_config("test.retention.watermarks"))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in sorted(parts)
        ]
    finally:
        consumer.close()


def _frames(directory: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.name: read_frame(p) for p in find_frames(directory, "H", "IDQ_TIMESERIES")}


def test_year_old_span_survives_retention_and_replays_identically(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    start = float((int(gps_now()) - YEAR) // 64 * 64)
    end = start + DURATION
    config, settings = pipeline_config(tmp_path, kafka_bootstrap, "retain", edit=_edit)
    k = settings.kafka
    assert k.topic_config("features")["retention.ms"] == "-1"
    control = f"{settings.general.tag}.control-time-retention"
    create_topics(
        k.admin_config(),
        [TopicSpec(control, partitions=1, config={"retention.ms": str(7 * 86400 * 1000)})],
    )
    model = SyntheticModel(
        seed=7, ifo="H1", target_channel=settings.samples.target_channel, n_witness=6,
        n_noise=10, glitch_rate=0.5,
    )  # fmt: skip
    producer = Producer(k.producer_config())
    # the features as the configuration partitions them (the stages read them so)
    for topic, how in (
        (k.topics.features, partitioning(k)),
        (control, {"partitioner": "round_robin", "partitions": 1}),
    ):
        pub = FeaturePublisher(producer, topic, "H1", "synthetic", **how)
        sent = pub.publish(model.generate, start - MARGIN, end + MARGIN)
        pub.flush()
    # the broker's retention check empties the time-retained control (proves it ran) ...
    deadline = time.monotonic() + 90
    while _watermarks(settings, control)[0][0] < sent:
        if time.monotonic() > deadline:
            if os.environ.get(BOOTSTRAP_ENV):
                pytest.skip("an external broker whose retention check interval is unknown")
            raise AssertionError(f"control topic not cleaned: {_watermarks(settings, control)}")
        time.sleep(0.5)
    # ... and leaves the size-retained features topic whole
    marks = _watermarks(settings, k.topics.features)
    assert all(low == 0 for low, _ in marks), marks
    assert sum(high for _, high in marks) == sent

    pipeline = LocalPipeline(config, tmp_path, start, end)
    try:
        # stage after stage: with all the data already there, a replayed evaluate would
        # otherwise race through the span before train's first model exists
        for group in (["train"], ["evaluate", "calibrate"], ["timeseries"]):
            pipeline.start(group, with_producer=False)
            pipeline.wait(group, timeout=300)
        frames_dir = tmp_path / "frames"
        first = _frames(frames_dir)
        assert len(first) == int(DURATION)
        replays = []
        for _ in range(2):
            again = pipeline.service("timeseries", ["--from-start"])
            again.start()
            assert again.proc is not None and again.proc.wait(300) == 0, again.tail()
            replays.append(_frames(frames_dir))
    finally:
        pipeline.stop()
    a, b = replays
    assert a.keys() == b.keys() == first.keys()
    ok = 0
    for name in a:
        assert a[name].keys() == b[name].keys()
        for channel in a[name]:
            np.testing.assert_array_equal(a[name][channel], b[name][channel])
            if "OK_" in channel:
                ok += int(a[name][channel].sum())
    assert ok > 0, "the replay must produce valid output, not only OK = 0"
