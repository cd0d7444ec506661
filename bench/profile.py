"""Profiles of the stages that miss the replay target (pyinstrument, text reports).

Each stage is re-run in replay mode over the same topic under ``python -m
pyinstrument`` (committed progress reset first, so it redoes the whole span) and the
text report is written to ``bench/results/profile_<stage>_<channels>ch.txt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench._infra import RunConfig, reset_group, run_sampled

MODULES = {
    "train": "idq_train.cli",
    "evaluate": "idq_evaluate.cli",
    "calibrate": "idq_calibrate.cli",
    "timeseries": "idq_timeseries.cli",
}


def profile_stage(
    cfg: RunConfig, stage: str, start: float, end: float, out_dir: Path, timeout: float
) -> Path:
    """Run ``stage`` under pyinstrument; returns the report's path."""
    reset_group(cfg, f"idq.H1.{stage}")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / f"profile_{stage}_{cfg.channels}ch.txt"
    program = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(report)]
    # one replica, as the replay runs it (else the group's quiet period, ~3 s of wall,
    # shows in the profile as a Consumer.poll in Checkpoint._settle)
    proc = cfg.pipeline(start, end).service(
        stage,
        ["--replicas", "1"],
        name=f"{stage}-profile",
        program=[*program, "-m", MODULES[stage]],
    )
    res = run_sampled({stage: proc}, timeout)[stage]
    if res.returncode != 0:
        raise RuntimeError(f"profiling {stage} failed ({res.returncode}):\n{proc.tail()}")
    return report
