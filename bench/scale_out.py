"""Scale-out: the timeseries stage with one and with two replicas in one consumer group.

The bench configuration (etc/idq-demo.toml) partitions the features topic by block of
time (``[kafka] partitioner = "block"``, docs/SCALE_OUT.md): a replica owns the strides
of the blocks in its partitions and reads only those blocks plus the pad at their edges.

:func:`run` gives the measurement its own features topic over ``span`` seconds (the
replay's channels, synthetic model and configuration; the replay run's models and
calibrations), then runs one replica, then two started together over the same span
(same group, committed offsets reset first, each writing frames to its own
directory). Useful throughput = feature rows of the span / wall time until both have
finished. The span is several times the replay's: every process pays ~5 s of CPU for
start-up (imports, clients, models) whatever its share, and over a short span that
fixed part, not the replay, decides the ratio (``fixed_cpu_s`` and
``cpu_ratio_net_of_fixed`` report it). Reported: CPU seconds per replica against the
one replica's (target <= 0.6), whole process and after start-up, the throughput
ratio, the frames each replica wrote, the feature batches each decoded, and whether
the two replicas' frames together are the one replica's, sample for sample.

``python -m bench.scale_out [--channels 1000] [--span 1800]`` runs it alone (a broker,
the replay of every stage for the models, then :func:`run`) and writes
``bench/results/scale_out.json``; ``bench.run`` runs it as part of the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._infra import (
    RunConfig,
    Sampled,
    create_run_topics,
    reset_group,
    run_sampled,
    write_config,
)
from idq_common.contracts import group_id
from idq_dev.processes import free_ports

RESULTS = Path(__file__).resolve().parent / "results" / "scale_out.json"
#: replayed seconds of the scale-out measurement in the full suite (the replay's 600 s
#: at 1,000 channels leave the ~5 s of start-up per process a third of the CPU)
SPAN = 1800.0


def _frames(d: Path) -> int:
    return sum(1 for _ in d.glob("*/*.gwf")) if d.exists() else 0


def same_frames(one: Path, parts: list[Path]) -> dict[str, Any]:
    """Whether the frames of ``parts`` together are the frames of ``one``, sample for sample."""
    from idq_common.io.frames import read_frame

    ref = {p.name: p for p in one.glob("*/*.gwf")}
    got = {p.name: p for d in parts for p in d.glob("*/*.gwf")}
    differ = []
    for name in sorted(set(ref) & set(got)):
        a, b = read_frame(ref[name]), read_frame(got[name])
        if a.keys() != b.keys() or any(not np.array_equal(a[k], b[k]) for k in a):
            differ.append(name)
    return {
        "frames_one_replica": len(ref),
        "frames_two_replicas": len(got),
        "missing": len(set(ref) - set(got)),
        "extra": len(set(got) - set(ref)),
        "differ": len(differ),
        "identical": bool(ref) and ref.keys() == got.keys() and not differ,
    }


def measure(
    cfg: RunConfig,
    start: float,
    span: float,
    rows_in_span: float,
    one_replica_wall_s: float,
    timeout: float,
    one_replica_cpu_s: float | None = None,
    one_replica_loop_cpu_s: float | None = None,
) -> dict[str, Any]:
    from idq_dev.testing.metrics import scrape_by

    reset_group(cfg, group_id("H1", "timeseries"))
    pipeline = cfg.pipeline(start, start + span)
    procs, dirs, ports = {}, {}, {}
    for i, port in zip((1, 2), free_ports(2), strict=True):
        name = f"timeseries-r{i}"
        dirs[name] = cfg.workdir / f"frames-r{i}"
        ports[name] = port
        procs[name] = pipeline.service(
            "timeseries",
            ["--metrics-port", str(port)],
            name=name,
            env={"IDQ_TIMESERIES__OUTPUT_DIR": str(dirs[name])},
        )
    # feature batches decoded per partition, scraped while the replicas run (they exit
    # at the span's end, taking their metrics with them)
    batches: dict[str, dict[str, float]] = {}
    last = [0.0]

    def sample() -> None:
        if time.monotonic() - last[0] < 2.0:
            return
        last[0] = time.monotonic()
        for n, port in ports.items():
            got = scrape_by(port, "idq_feature_batches_read_total", "partition")
            if got:
                batches[n] = got

    res = run_sampled(procs, timeout, ports=ports, on_sample=sample)
    for name, r in res.items():
        if r.returncode != 0:
            raise RuntimeError(f"{name} exited {r.returncode}:\n{procs[name].tail()}")
    fixed = fixed_cpu(cfg, start, timeout)
    wall = max(r.wall_s for r in res.values())
    frames = {n: _frames(d) for n, d in dirs.items()}
    shared = all(0 < f < int(span) for f in frames.values())
    cpu = {n: round(r.cpu_s, 2) if r.cpu_s else None for n, r in res.items()}
    worst = max((c for c in cpu.values() if c), default=None)
    # the same after start-up (imports, clients, models: paid once per replica, whatever
    # the span), from the CPU seconds at the moment each process's /healthz answered
    loop = {n: round(c, 2) if (c := loop_cpu(r)) else None for n, r in res.items()}
    worst_loop = max((c for c in loop.values() if c), default=None)
    load = [round(x, 2) for x in os.getloadavg()]
    r1 = rows_in_span / one_replica_wall_s
    r2 = rows_in_span / wall
    return {
        "load_avg": load,
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
        "replicas_1_loop_cpu_s": round(one_replica_loop_cpu_s, 2)
        if one_replica_loop_cpu_s
        else None,
        "replicas_2_loop_cpu_s": loop,
        "loop_cpu_ratio_per_replica": round(worst_loop / one_replica_loop_cpu_s, 3)
        if worst_loop and one_replica_loop_cpu_s
        else None,
        # CPU of one replica over a single stride (start-up, group, models: what every
        # replica pays whatever its share), and the ratio with it taken off both sides
        "fixed_cpu_s": round(fixed, 2) if fixed else None,
        "cpu_ratio_net_of_fixed": round((worst - fixed) / (one_replica_cpu_s - fixed), 3)
        if worst and one_replica_cpu_s and fixed and one_replica_cpu_s > fixed
        else None,
        "strides_in_span": int(span),
        "frames_written_per_replica": frames,
        # feature batches each replica decoded, per partition of the features topic (at
        # the last scrape before it exited: a lower bound)
        "feature_batches_read_per_replica": batches,
        "partitioner": partitioner(cfg),
        "same_frames_as_one_replica": same_frames(cfg.workdir / "frames", list(dirs.values())),
        # shared: the replicas split the strides (each wrote fewer than all of them)
        "work_shared": shared,
        "note": (
            "throughput counts each stride once; "
            + (
                "the replicas split the strides between them"
                if shared
                else "each replica did every stride (work duplicated, not split)"
            )
            + "; the machine is shared: see load_avg"
        ),
    }


def run(
    workdir: Path,
    bootstrap: str,
    ref: RunConfig,
    start: float,
    span: float,
    rows_per_data_s: float,
    timeout: float,
    overrides: dict[str, str] | None = None,
    own_topic: bool = True,
) -> dict[str, Any]:
    """One replica then two over ``span`` seconds of their own features topic.

    ``ref``: the replay run whose models and calibrations (topics and store) both rank
    with; ``rows_per_data_s``: feature rows per data second (the ceiling's count);
    ``own_topic`` False: on ``ref``'s topic instead (the quick suite: its span).
    """
    from bench import replay
    from idq_dev.pipeline.local import MARGIN

    cfg, produce_s = ref, 0.0
    if own_topic:
        cfg = write_config(
            workdir,
            f"scaleout{ref.channels}",
            bootstrap,
            ref.channels,
            share=ref,
            overrides={**replay.OVERRIDES, **(overrides or {})},
        )
        create_run_topics(cfg)
        t0 = time.monotonic()
        producer = cfg.pipeline(start, start + span)
        producer.start((), with_producer=True)
        producer.wait(["produce"], timeout=max(600.0, 10 * span), poll=0.05)
        produce_s = time.monotonic() - t0
    # the one replica on the same topic and configuration, just before the two
    reset_group(cfg, group_id("H1", "timeseries"))
    one = replay.run_stage(cfg, "timeseries", start, start + span, timeout)
    result = measure(
        cfg,
        start,
        span,
        rows_per_data_s * span,
        one.wall_s,
        timeout,
        one_replica_cpu_s=one.cpu_s,
        one_replica_loop_cpu_s=loop_cpu(one),
    )
    result.update(
        channels=ref.channels,
        span_s=span,
        produce_wall_s=round(produce_s, 2),
        produced_s=span + 2 * MARGIN,
    )
    return result


def fixed_cpu(cfg: RunConfig, start: float, timeout: float) -> float | None:
    """CPU seconds of one timeseries replica run over a single 1-s stride."""
    reset_group(cfg, group_id("H1", "timeseries"))
    pipeline = cfg.pipeline(start, start + 1.0)
    proc = pipeline.service(
        "timeseries",
        name="timeseries-fixed",
        env={"IDQ_TIMESERIES__OUTPUT_DIR": str(cfg.workdir / "frames-fixed")},
    )
    r = run_sampled({"timeseries-fixed": proc}, timeout)["timeseries-fixed"]
    return r.cpu_s if r.returncode == 0 else None


def loop_cpu(r: Sampled) -> float | None:
    """CPU seconds of a finished process after its start-up (None if not measured)."""
    return r.cpu_s - r.cpu_up_s if r.cpu_s and r.cpu_up_s is not None else None


def partitioner(cfg: RunConfig) -> str:
    """``[kafka] partitioner`` of the run's configuration."""
    m = re.search(r'(?m)^partitioner = "(\w+)"', cfg.path.read_text())
    return m.group(1) if m else "round_robin"


def main(args: list[str] | None = None) -> int:
    """Measure scale-out alone: replay every stage once (models), then :func:`run`."""
    from bench import replay
    from bench.run import FULL, TARGET_CHANNELS
    from idq_common.gpstime import gps_now
    from idq_dev.broker import LocalBroker
    from idq_dev.pipeline.local import MARGIN

    p = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__)
    p.add_argument("--channels", type=int, default=TARGET_CHANNELS)
    p.add_argument("--span", type=float, default=SPAN, help="replayed seconds")
    p.add_argument("--workdir", type=Path, default=Path(".cache/bench-scale-out"))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--block-seconds", type=int, default=None, help="[kafka] block_seconds (default: config)"
    )
    ns = p.parse_args(args)
    workdir = ns.workdir.resolve()
    broker = LocalBroker(workdir / "kafka")
    status = broker.start()
    t0 = time.monotonic()
    try:
        start = float((int(gps_now()) - 7200) // 64 * 64)
        timeout = max(300.0, 10 * ns.span)
        load_start = [round(x, 2) for x in os.getloadavg()]
        overrides = dict(FULL["overrides"])
        if ns.block_seconds:
            overrides["kafka.block_seconds"] = str(ns.block_seconds)
        # the models and calibrations: the full suite's replay at these channels
        models_span = FULL["replay"].get(ns.channels, 600.0)
        r = replay.measure(
            workdir, str(status.bootstrap), ns.channels, start, models_span, timeout, overrides
        )
        rate = r["ceiling"]["rows"] / (models_span + 2 * MARGIN)
        result = run(
            workdir, str(status.bootstrap), r["config"], start, ns.span, rate, timeout, overrides
        )
        result.update(load_avg_start=load_start)
        result["wall_s"] = round(time.monotonic() - t0, 1)
    finally:
        broker.stop()
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
