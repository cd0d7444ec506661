"""The reduced chaos run (issue 12): the whole pipeline under kill -9 (at seeded
points and right after an output appears), a broker restart, an S3 freeze and the
bad-input corpus, against a clean run of the same span. ``make chaos`` runs the full
form and writes bench/results/chaos.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idq_dev.chaos.run import ChaosSpec, run, write_report

# about 5 minutes on an idle 2-core machine (two runs of four phases, process starts
# dominate); the bound leaves room for a loaded one
pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.slow, pytest.mark.timeout(1500)]


def test_pipeline_survives_chaos_with_identical_outputs(tmp_path: Path) -> None:
    spec = ChaosSpec(
        duration=192.0,
        seed=7,
        kills_per_service=1,
        broker_bounces=1,
        s3_freeze_seconds=6.0,
        witnesses=6,
        noise_channels=30,
        glitch_rate=1.0,  # enough glitches in 192 s for healthy calibrations (OK = 1)
        live_normal=8.0,
        live_down=12.0,
        live_slow=8.0,
        ingest_seconds=96.0,
    )
    report = run(spec, tmp_path / "chaos", progress=lambda _: None)
    write_report(report, tmp_path / "chaos.json")
    checks = report["checks"]
    # every check: models, quivers, calibrations, frames equal the clean run's; samples
    # counted once; dead letters; ingest's batches and dead letters; live DQSegDB down
    # and slow (OK only where the server had answered, a gap for every second without)
    failed = {k: v for k, v in checks.items() if not v["ok"]}
    assert not failed, json.dumps(failed, indent=1, default=str)[:6000]
    # calibrations equal the clean run's and every evaluated sample is accounted once
    samples = checks["samples_consumed_once"]["chaos"]
    assert samples and all(v["evaluated"] > 0 for v in samples.values()), samples
    assert checks["ingest_dead_letters"]["kinds"] >= 15
    kinds = report["faults_per_kind"]
    # every fault kind injected: the schedule follows each phase's progress
    assert {"kill9", "kill9_on_output", "broker_restart", "s3_freeze"} <= set(kinds), kinds
    assert report["phases"]["ingest"]["faults"], report["phases"]["ingest"]
    # a phase that ends (train: seconds) before its later kills are due reports them
    # under faults_not_injected; every kind is injected in some phase
    assert all(f["recovery_s"] is not None for p in report["phases"].values() for f in p["faults"])
    assert report["checks"]["dead_letters"]["kinds"] >= 20
