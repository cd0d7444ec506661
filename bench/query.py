"""Alert queries over a span of timeseries frames: ``idq query``'s latency.

Writes ``span`` seconds of one-second product frames (the timeseries stage's stride
and rate, three classifiers, LIGO directory layout) once, then times queries of
+-8 s at random GPS times with :func:`idq_common.report.query.query`, as an alert
pipeline would call it from a long-lived process, plus one cold ``idq query`` process
(interpreter start and imports included). Target: < 100 ms per query over a day.

``python -m bench.query [--span 86400] [--queries 200] [--frames DIR]``; the frames of
a span are kept under ``.cache/bench/`` and reused (writing a day takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

REPO = Path(__file__).resolve().parents[1]
CLASSIFIERS = ("ovl", "forest", "sgd")
START = 1_400_000_000  # a fixed start: the cached frames stay valid between runs
RATE = 128.0
WINDOW = 8.0


def _write_chunk(args: tuple[str, float, float]) -> int:
    from idq_dev.testing.frames import write_product_frames

    directory, start, end = args
    paths = write_product_frames(Path(directory), "H1", CLASSIFIERS, start, end, 1.0, RATE)
    return sum(1 for _ in paths)


def ensure_frames(directory: Path, span: float, workers: int = 2) -> dict[str, Any]:
    """``span`` s of frames from START under ``directory`` (skipped when already there)."""
    from idq_common.progress import Progress

    done = directory / f".complete-{int(span)}"
    if done.exists():
        return {"written": 0, "write_s": 0.0, "reused": True}
    t0 = time.monotonic()
    chunk = 600.0
    jobs = [
        (str(directory), START + a, min(START + a + chunk, START + span))
        for a in np.arange(0.0, span, chunk)
    ]
    progress = Progress("bench.query: writing frames", span, unit="frames", every=15.0)
    written = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n in pool.map(_write_chunk, jobs):
            written += n
            progress.update(written)
    progress.finish()
    done.touch()
    return {"written": written, "write_s": round(time.monotonic() - t0, 1), "reused": False}


def _config(directory: Path, workdir: Path) -> Path:
    import tomllib

    doc = tomllib.loads((REPO / "etc" / "idq.toml").read_text())
    doc["timeseries"]["output_dir"] = str(directory)
    doc["classifier"] = [
        {"nickname": c, "flavor": f}
        for c, f in zip(CLASSIFIERS, ("ovl", "random_forest", "sgd"), strict=True)
    ]
    path = workdir / "query.toml"
    path.write_text(tomli_w.dumps(doc))
    return path


def measure(span: float, workdir: Path, queries: int = 200, frames: Path | None = None) -> dict:
    """Latency of ``queries`` random +-8 s queries over ``span`` s of frames."""
    from idq_common.config import load_settings
    from idq_common.report.query import query

    directory = frames or REPO / ".cache" / "bench" / f"query-frames-{int(span)}"
    written = ensure_frames(directory, span)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = _config(directory, workdir)
    settings = load_settings(cfg)
    rng = np.random.default_rng(7)
    times = rng.uniform(START + WINDOW, START + span - WINDOW, queries)
    query(settings, float(times[0]), WINDOW)  # imports and LALFrame's first open
    lat, cpu = [], []
    for t in times:
        t0, c0 = time.perf_counter(), time.process_time()
        r = query(settings, float(t), WINDOW)
        lat.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        # every sample of the window read and OK (2048, or 2049 with both ends on the grid)
        assert r["classifiers"]["ovl"]["ok_samples"] >= 2 * WINDOW * RATE, r
    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "idq_common.cli.main", "query", "-c", str(cfg)]
    cli = subprocess.run(
        [*argv, "--gps", str(float(times[0])), "--window", str(WINDOW)],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    cli_s = time.perf_counter() - t0
    if cli.returncode != 0:
        raise RuntimeError(f"idq query failed: {cli.stderr}")
    ms, cpu_ms = np.asarray(lat) * 1000, np.asarray(cpu) * 1000
    return {
        "span_s": span,
        "frames": int(span),
        "classifiers": len(CLASSIFIERS),
        "window_s": WINDOW,
        "queries": queries,
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 2),
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 2),
        "latency_ms_max": round(float(ms.max()), 2),
        # CPU time of the querying process: less sensitive to the other jobs on the machine
        "cpu_ms_p50": round(float(np.percentile(cpu_ms, 50)), 2),
        "cpu_ms_p95": round(float(np.percentile(cpu_ms, 95)), 2),
        "load_average": round(os.getloadavg()[0], 1),
        "cli_cold_s": round(cli_s, 2),
        "frames_written": written,
    }


def main(args: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.query", description=__doc__)
    p.add_argument("--span", type=float, default=86400.0, help="seconds of frames")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--frames", type=Path, default=None, help="where the frames go")
    p.add_argument("--workdir", type=Path, default=REPO / ".cache" / "bench")
    ns = p.parse_args(args)
    print(json.dumps(measure(ns.span, ns.workdir, ns.queries, ns.frames), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
