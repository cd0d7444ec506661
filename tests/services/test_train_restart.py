"""Train restarted mid-run keeps its training set (issue 12).

Before the fix the accumulated samples lived only in memory: the first supervised model
after a restart was trained on the ~min_new_samples samples read since the last commit,
and announced a span starting at the restart point. Now the training set is stored
with every round of models and named by the committed checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from idq_common.gpstime import gps_now
from idq_dev.testing.pipeline import pipeline_config
from idq_dev.testing.topics import read_topic

pytestmark = [pytest.mark.kafka]

BIN = Path(sys.executable).parent
MODEL = ["--witnesses", "4", "--noise-channels", "6", "--glitch-rate", "0.5", "--seed", "5"]


def _announcements(settings: Any) -> list[dict[str, Any]]:
    msgs = read_topic(settings.kafka, settings.kafka.topics.models, "trainrs.reader")
    return [m.record for m in sorted(msgs, key=lambda m: (m.timestamp_ms, m.record["created_gps"]))]


def _run(argv: list[str], timeout: float = 240.0) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_supervised_model_after_restart_sees_the_whole_history(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    start = float((int(gps_now()) - 3000) // 64 * 64)
    end, mid = start + 512.0, start + 272.0

    def edit(doc: dict[str, Any]) -> None:
        doc["train"].update(min_new_samples=150, max_samples=100_000, max_stride=100_000)
        doc["samples"]["random_rate"] = 1.0

    config, settings = pipeline_config(tmp_path, kafka_bootstrap, "trainrs", edit=edit)
    common = ["--config", str(config)]
    _run([str(BIN / "idq"), "produce", *common, "--gps-start", str(start - 16),
          "--gps-end", str(end + 16), "--speed", "0", *MODEL])  # fmt: skip
    train = [sys.executable, "-m", "idq_train.cli", *common, "--gps-start", str(start)]
    _run([*train, "--gps-end", str(mid)])
    before = [a for a in _announcements(settings) if a["classifier"] == "forest"]
    _run([*train, "--gps-end", str(end)])
    forest = [a for a in _announcements(settings) if a["classifier"] == "forest"]
    after = forest[len(before) :]
    assert before and after, (len(before), len(after))
    # every model of the uninterrupted history starts at the first stride ...
    assert {a["start"] for a in forest} == {start}
    # ... and the first one after the restart has more samples than the last one before
    assert after[0]["n_samples"] > before[-1]["n_samples"]
    ns = [a["n_samples"] for a in forest]
    assert ns == sorted(ns)
