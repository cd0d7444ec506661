"""Scale-out: the timeseries stage with one and with two replicas in one consumer group.

The timeseries stage is not partition-aware yet: each replica reads every partition of
the features topic (its reader assigns them all) and computes every stride, and the
consumer group is used only for the checkpoint. Two replicas therefore duplicate the
work instead of sharing it. This measures what two replicas really give: both are
started together over the same span (same group, committed offsets reset first, each
writing frames to its own directory), useful throughput = feature rows of the span /
wall time until both have finished, and the strides (frames) each one wrote are
counted to show the duplication. The one-replica figure is the timeseries replay of
the same topic, measured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench._infra import RunConfig, reset_group, run_sampled
from idq_common.contracts import group_id


def _frames(d: Path) -> int:
    return sum(1 for _ in d.glob("*/*.gwf")) if d.exists() else 0


def measure(
    cfg: RunConfig,
    start: float,
    span: float,
    rows_in_span: float,
    one_replica_wall_s: float,
    timeout: float,
    one_replica_cpu_s: float | None = None,
) -> dict[str, Any]:
    reset_group(cfg, group_id("H1", "timeseries"))
    pipeline = cfg.pipeline(start, start + span)
    procs, dirs = {}, {}
    for i in (1, 2):
        name = f"timeseries-r{i}"
        dirs[name] = cfg.workdir / f"frames-r{i}"
        procs[name] = pipeline.service(
            "timeseries", name=name, env={"IDQ_TIMESERIES__OUTPUT_DIR": str(dirs[name])}
        )
    res = run_sampled(procs, timeout)
    for name, r in res.items():
        if r.returncode != 0:
            raise RuntimeError(f"{name} exited {r.returncode}:\n{procs[name].tail()}")
    wall = max(r.wall_s for r in res.values())
    frames = {n: _frames(d) for n, d in dirs.items()}
    shared = all(0 < f < int(span) for f in frames.values())
    cpu = {n: round(r.cpu_s, 2) if r.cpu_s else None for n, r in res.items()}
    worst = max((c for c in cpu.values() if c), default=None)
    r1 = rows_in_span / one_replica_wall_s
    r2 = rows_in_span / wall
    return {
        "replicas_1_rows_per_s": round(r1, 1),
        "replicas_2_rows_per_s": round(r2, 1),
        "speedup": round(r2 / r1, 3) if r1 else 0.0,
        "replicas_1_wall_s": round(one_replica_wall_s, 2),
        "replicas_2_wall_s": round(wall, 2),
        # CPU seconds of each replica / of one replica alone over the span (target <= 0.6)
        "replicas_1_cpu_s": round(one_replica_cpu_s, 2) if one_replica_cpu_s else None,
        "replicas_2_cpu_s": cpu,
        "cpu_ratio_per_replica": round(worst / one_replica_cpu_s, 3)
        if worst and one_replica_cpu_s
        else None,
        "strides_in_span": int(span),
        "frames_written_per_replica": frames,
        # shared: the replicas split the strides (each wrote fewer than all of them)
        "work_shared": shared,
        "note": (
            "throughput counts each stride once; "
            + (
                "the replicas split the strides between them"
                if shared
                else "each replica did every stride (work duplicated, not split)"
            )
        ),
    }
