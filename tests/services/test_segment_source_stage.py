"""The segments-topic source of a stage (issue 12): its own stage's timeout, and one
consumer at a time however often the stage resyncs.

Before the fix every stage waited for unknown segment spans as long as *timeseries*
was configured to, and each resync (``_build``) opened a new segments consumer and
never closed the previous one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from idq_common.gpstime import gps_now
from idq_dev.testing.pipeline import pipeline_config
from idq_evaluate.stage import EvaluateStage

pytestmark = [pytest.mark.kafka]


def test_topic_segments_use_the_stage_timeout_and_do_not_leak(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["segments"] = {"source": "topic", "flag": "H1:DMT-ANALYSIS_READY:1"}
        doc["evaluate"]["stream"]["timeout"] = 3
        doc["timeseries"]["stream"]["timeout"] = 17

    _, settings = pipeline_config(tmp_path, kafka_bootstrap, "segsrc", edit=edit)
    start = float(int(gps_now()) // 64 * 64 - 640)
    ns = argparse.Namespace(gps_start=start, gps_end=start + 64, metrics_port=0, from_start=True)
    stage = EvaluateStage.from_settings(settings, ns)
    try:
        first = stage.segments
        assert first.wait == 3  # was 17: the timeseries timeout, for every stage
        olds = []
        for k in range(4):
            olds.append(stage.segments)
            stage._build(start + 4 * k)  # what a resync after a rebalance does
        assert all(o.consumer is None for o in olds)  # closed, not leaked
        assert stage.segments.consumer is not None and stage.segments is not first
    finally:
        stage.close()
    assert stage.segments.consumer is None
