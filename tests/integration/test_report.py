"""``idq report`` on a real pipeline run, rendered by headless Chromium.

A short pipeline (real broker, the four services, a file store, GWF frames) produces
models, calibrations, quivers and frames; ``idq report`` writes the page; Chromium
renders it: the screenshot is not blank and every image has loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idq_common.gpstime import gps_now
from idq_dev.pipeline.local import STAGES, LocalPipeline
from idq_dev.testing.chromium import chromium, image_status, non_blank_fraction, screenshot
from idq_dev.testing.pipeline import pipeline_config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DURATION = 512.0
# glitchy: calibrate needs >= 50 samples of each class from one model
MODEL_ARGS = ["--witnesses", "6", "--noise-channels", "12", "--glitch-rate", "2.0", "--seed", "5"]


def small_run(workdir: Path, bootstrap: str, duration: float = DURATION) -> dict[str, Any]:
    """A pipeline over ``duration`` s that trains and calibrates early; returns its facts."""

    def edit(doc: dict[str, Any]) -> None:
        doc["samples"]["random_rate"] = 1.0
        doc["train"]["min_new_samples"] = 250
        doc["calibrate"]["min_new_samples"] = 120
        # evaluate's clean samples: at random_rate 1/s a model's quivers held ~28 clean
        # samples against ~200 glitch ones, under calibrate's 50 per class, so the run
        # ended without a single calibration
        doc["evaluate"]["clean_rate"] = 4.0

    config, settings = pipeline_config(workdir, bootstrap, "report", edit=edit)
    start = float((int(gps_now()) - int(duration) - 600) // 64 * 64)
    end = start + duration
    pipeline = LocalPipeline(config, workdir, start, end, speed=16.0, producer_args=MODEL_ARGS)
    try:
        pipeline.start()
        pipeline.wait(["produce", *STAGES], timeout=600)
    finally:
        pipeline.stop()
    return {"config": config, "settings": settings, "start": start, "end": end}


@pytest.fixture(scope="module")
def report(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("report")
    run = small_run(tmp, kafka_bootstrap)
    out = tmp / "report.html"
    cmd = [sys.executable, "-m", "idq_common.cli.main", "report", "-c", str(run["config"])]
    cmd += ["--gps-start", repr(run["start"]), "--gps-end", repr(run["end"]), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    yield {**run, "out": out, "proc": proc}


def test_the_cli_writes_one_self_contained_page(report: dict[str, Any]) -> None:
    proc = report["proc"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(report["out"].resolve())
    html = report["out"].read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
    for section in ("timeseries", "veto list", "most important channels", "gaps", "dead letters"):
        assert section in html, section
    for name in ("ovl", "forest", "sgd"):
        assert f"{name} ROC" in html and f"{name} calibration coverage" in html
    # every classifier was calibrated in the span, each announcement with its FAP floor
    assert "<h3>calibrations (0)</h3>" not in html
    assert "FAP floor" in html


@pytest.mark.skipif(chromium() is None, reason="chromium not installed: make system-deps")
def test_chromium_renders_it_with_every_image_loaded(report: dict[str, Any]) -> None:
    page = report["out"]
    status = image_status(page)
    assert len(status) >= 1 + 2 * 3 + 2  # timeseries, ROC + coverage each, 2 importances
    broken = [s for s in status if not (s["complete"] and s["w"] > 0 and s["h"] > 0)]
    assert not broken, broken
    png = screenshot(page, page.with_suffix(".png"))
    assert non_blank_fraction(png) > 0.02
