"""Replay: each stage alone over a pre-filled features topic, as its own OS process.

Per channel count: a fresh topic set is filled with ``idq produce --speed 0`` (about
16 trigger rows per second per auxiliary channel, the production feature rate), the
ceiling is measured on that topic, then train, evaluate, calibrate and timeseries run
one after the other in replay mode (``--gps-start/--gps-end``), each timed alone from
process spawn to exit (imports and broker connection included: the figure a replay
job sees) while psutil samples its RSS. Order matters only for inputs: evaluate needs
the models train announced, calibrate the quivers evaluate published, timeseries the
calibrations.

``x_realtime`` = replayed data seconds / wall seconds. ``rows_per_s`` = feature rows
in the replayed span / wall seconds (calibrate reads quivers, not features: its row
figure is the equivalent of the span it covered). ``ratio_to_ceiling`` divides by the
ceiling measured on the same topic in the same run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bench import ceiling
from bench._infra import (
    MAX_BATCH_BYTES,
    RunConfig,
    Sampled,
    create_run_topics,
    read_records,
    run_sampled,
    write_config,
)
from idq_common.contracts import STAGES
from idq_common.io.avro.convert import record_to_timeseries
from idq_dev.pipeline.local import MARGIN
from idq_dev.processes import free_port

log = logging.getLogger(__name__)
#: the bench config lowers the evaluate idle timeout so calibrate's end-of-replay wait
#: (three idle timeouts with no new quiver) is 9 s, not 30 s
OVERRIDES = {"evaluate.stream.timeout": "3"}


def prepare(
    workdir: Path,
    bootstrap: str,
    channels: int,
    start: float,
    span: float,
    overrides: dict[str, str] | None = None,
) -> tuple[RunConfig, dict[str, Any]]:
    """Config + topics + produced data; returns the producer figures."""
    cfg = write_config(
        workdir,
        f"replay{channels}",
        bootstrap,
        channels,
        overrides={**OVERRIDES, **(overrides or {})},
    )
    create_run_topics(cfg)
    # the local pipeline's producer: the span plus MARGIN seconds on each side
    pipeline = cfg.pipeline(start, start + span)
    t0 = time.monotonic()
    pipeline.start((), with_producer=True)
    pipeline.wait(["produce"], timeout=max(600.0, 10 * span), poll=0.05)
    wall = time.monotonic() - t0
    return cfg, {
        "produce_wall_s": round(wall, 2),
        "produce_x_realtime": round((span + 2 * MARGIN) / wall, 1),
        "max_batch_bytes": MAX_BATCH_BYTES,
    }


def work_done(stage: str, cfg: RunConfig) -> dict[str, Any]:
    """What the stage really did, from its output topic: a fast replay that ranked
    nothing is not a throughput figure (``valid`` False). Timeseries: mean OK fraction
    over strides and classifiers (OK = 0 everywhere means no healthy calibration, so no
    features were computed and nothing was ranked); evaluate: quivers ranked; train:
    models published; calibrate: healthy calibrations."""
    if stage == "timeseries":
        oks = [float(record_to_timeseries(r)["ok"].mean()) for r in read_records(cfg, stage)]
        frac = sum(oks) / len(oks) if oks else 0.0
        return {"ok_fraction": round(frac, 3), "valid": frac > 0.5}
    if stage == "evaluate":
        n = len(read_records(cfg, "quivers"))
        return {"quivers_ranked": n, "valid": n > 0}
    if stage == "train":
        n = len(read_records(cfg, "models"))
        return {"models_published": n, "valid": n > 0}
    cals = read_records(cfg, "calibrations")
    healthy = sum(1 for r in cals if r["healthy"])
    return {"calibrations": len(cals), "healthy_calibrations": healthy, "valid": len(cals) > 0}


def run_stage(
    cfg: RunConfig,
    stage: str,
    start: float,
    end: float,
    timeout: float,
    env: dict[str, str] | None = None,
    tag: str = "",
) -> Sampled:
    port = free_port()
    # one replica: it starts its strides at once, not after the group's quiet period
    proc = cfg.pipeline(start, end, env).service(
        stage, ["--metrics-port", str(port), "--replicas", "1"], name=f"{stage}{tag}"
    )
    res = run_sampled({stage: proc}, timeout, ports={stage: port})[stage]
    if res.returncode != 0:
        raise RuntimeError(f"{stage} exited {res.returncode}:\n{proc.tail()}")
    return res


def measure(
    workdir: Path,
    bootstrap: str,
    channels: int,
    start: float,
    span: float,
    timeout: float,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Replay figures of every stage at ``channels`` channels over ``span`` seconds."""
    cfg, prod = prepare(workdir, bootstrap, channels, start, span, overrides)
    ceil = ceiling.measure(cfg)
    produced_span = span + 2 * MARGIN
    rows_in_span = ceil["rows"] * span / produced_span
    out: dict[str, Any] = {
        "channels": channels,
        "span_s": span,
        "config": cfg,
        "ceiling": ceil,
        "producer": prod,
        "stages": [],
        "processes": {},
    }
    for stage in STAGES:
        res = run_stage(cfg, stage, start, start + span, timeout)
        out["processes"][stage] = res
        rows_s = rows_in_span / res.wall_s
        loop = res.loop_s
        out["stages"].append(
            {
                "stage": stage,
                "channels": channels,
                "span_s": span,
                "wall_s": round(res.wall_s, 2),
                # without interpreter start-up (imports ~2-3 s): from /healthz answering to exit
                "loop_s": round(loop, 2) if loop else None,
                "x_realtime_loop": round(span / loop, 2) if loop else None,
                "x_realtime": round(span / res.wall_s, 2),
                # span / CPU seconds of the process (start-up included): what the code
                # costs, whatever else the shared machine runs
                "cpu_s": round(res.cpu_s, 2) if res.cpu_s else None,
                "x_realtime_cpu": round(span / res.cpu_s, 2) if res.cpu_s else None,
                "rows_per_s": round(rows_s, 1),
                "ratio_to_ceiling": round(rows_s / ceil["rows_per_s"], 4)
                if ceil["rows_per_s"]
                else 0,
                "input": "quivers" if stage == "calibrate" else "features",
                **work_done(stage, cfg),
            }
        )
        log.info("replay %d ch %s: %.1fx real time", channels, stage, span / res.wall_s)
    return out
