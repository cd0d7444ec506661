"""The benchmark harness runs end to end (``make bench-quick``), so it never rots.

Figures are not asserted against targets (the machine is shared and noisy); the test
checks that every field of issue 6's ``latest.json`` shape is present and sane.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

# `bench` is a top-level package of the repository, not an installed one
REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.run import main  # noqa: E402

# ~3 min on an idle 2-core machine; the bound is for a hang, with room for a loaded one
pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(600)]


def test_quick_suite_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    assert main(["--quick", "--out", str(out), "--workdir", str(tmp_path / "work")]) == 0
    r = json.loads(out.read_text())
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    assert r["ceiling"]["rows_per_s"] > 0
    stages = {x["stage"] for x in r["replay"]}
    assert stages == {"train", "evaluate", "calibrate", "timeseries"}
    for x in r["replay"]:
        assert x["x_realtime"] > 0 and x["rows_per_s"] > 0 and x["ratio_to_ceiling"] > 0
        assert x["cpu_s"] > 0 and x["x_realtime_cpu"] > 0  # CPU seconds from wait4
    live = r["live"]
    assert live["channels"] == 1000 and live["stride_s"] == 1
    assert live["strides_measured"] > 0
    assert 0 < live["latency_p50_s"] <= live["latency_p99_s"] < 60
    assert {m["service"] for m in r["memory"]} == stages
    assert all(m["peak_rss_mib"] > 0 for m in r["memory"])
    so = r["scale_out"]
    assert so["replicas_1_rows_per_s"] > 0 and so["replicas_2_rows_per_s"] > 0
    sc = r["science"]
    for name, c in sc["classifiers"].items():
        for fap in ("0.001", "0.01", "0.1"):
            assert 0 <= c["eff_at_fap"][fap] <= 1, name
            assert 0 <= c["optimal_eff_at_fap"][fap] <= 1, name
    assert set(sc["calibration_coverage"]) == {"0.1", "0.01"}
    assert math.isfinite(sc["stride_invariance_max_abs_diff"])
    assert {"deadtime", "efficiency", "ovl_efficiency"} <= set(sc["hveto"])
    fam = sc["families"]
    assert fam["seeds"] and str(fam["tuning_seed"]) not in fam["seeds"]
    for row in fam["seeds"].values():
        assert 0 < row["witnessed_bound"] < 1
        assert 0 <= row["witness_above_clean_q99"] <= row["witnessed_bound"]
        assert all(0 <= c["eff_at_0.01"] <= 1 for c in row["classifiers"].values())
        assert 0 < row["optimal_eff_at_0.01"] <= 1 and row["optimal_ratio_to_bound"] > 0
        assert all(c["ratio_to_optimal"] >= 0 for c in row["classifiers"].values())
        assert row["trigger_optimal_ratio_to_bound"] > 0 and row["ratio_sigma"] > 0
    best = fam["best_classifier"]
    ratios = [row["classifiers"][best]["ratio_to_bound"] for row in fam["seeds"].values()]
    assert fam["best_ratio_to_bound"] == round(min(ratios), 4)
    assert abs(fam["best_mean_ratio_to_bound"] - sum(ratios) / len(ratios)) < 1e-4
    ing = r["ingest"]
    assert {x["style"] for x in ing["styles"]} == {"snax", "sgnax"}
    for x in ing["styles"]:
        assert x["valid"] and x["channels"] == 1000 and x["x_realtime"] > 0, x
    cl = r["classifiers"]
    assert cl["channels"] == 1000 and cl["train_samples"] > 0
    assert set(cl["flavors"]) == {
        "ovl",
        "random_forest",
        "hist_gradient_boosting",
        "sgd",
        "naive_bayes",
    }
    for name, c in cl["flavors"].items():
        assert c["model_bytes"] > 0 and c["load_s"] > 0, name
        assert c["predict_samples_per_s"] > 0, name
    q = r["query"]
    assert q["frames"] == 600 and 0 < q["latency_ms_p50"] <= q["latency_ms_p95"]
    assert q["cpu_ms_p50"] > 0 and q["cli_cold_s"] > 0
    assert r["targets"] and all("met" in t for t in r["targets"])
    assert r["scale_out"]["cpu_ratio_per_replica"] > 0 and len(r["load_avg_start"]) == 3
    assert r["stride"]["bit_identical"] and r["stride"]["cpu_ms_per_stride_batched"] > 0
